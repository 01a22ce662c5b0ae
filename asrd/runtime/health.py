"""Which actors of a stage may get calls. When an actor dies, Ray restarts it; a call sent while
it restarts can fail without having run, so a failure alone does not say that the call's rows
are to blame. After a failure an actor gets calls again only once it answered a ping: every
failure a stage counts against rows is then one of a call that really ran. An actor whose
restarts are used up is gone: it gets no calls again, and the stage carries on with the rest
(a node that lost a GPU keeps running on the others)."""

from __future__ import annotations

from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError


class ActorHealth:
    def __init__(self, actors: list[Any]):
        self.actors = actors
        self.ok = [True] * len(actors)
        self.gone = [False] * len(actors)
        self.pings: dict[ray.ObjectRef, int] = {}

    def failed(self, k: int) -> None:
        self.ok[k] = False

    def usable(self, k: int) -> bool:
        return self.ok[k] and not self.gone[k]

    def all_gone(self) -> bool:
        return all(self.gone)

    def feed(self) -> None:
        """Ping every actor that failed, is not gone, and has no ping out."""
        pinged = set(self.pings.values())
        for k, ok in enumerate(self.ok):
            if not ok and not self.gone[k] and k not in pinged:
                self.pings[self.actors[k].ping.remote()] = k

    def complete(self, ref: ray.ObjectRef) -> None:
        k = self.pings.pop(ref)
        try:
            ray.get(ref)
        except ActorUnavailableError:
            return  # still restarting: pinged again
        except ActorDiedError:
            self.gone[k] = True  # its restarts are used up
            return
        except RayActorError:
            pass
        self.ok[k] = True
