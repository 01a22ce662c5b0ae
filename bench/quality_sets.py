"""The labelled short-utterance sets of bench/bench_quality.py, as text: what espeak-ng says and
the reference each row carries.

Short utterances are the bulk of command, call-centre and read-prompt corpora (1-5 words), where
per-row signals are noisiest: a language guess from three words, a mean log-probability over four
tokens. The English set mixes the shapes such corpora have: commands, everyday phrases, numbers
(said as digits: espeak reads "42" as "forty-two", and the reference keeps the digits, which
Whisper's normaliser compares either way), and names of people and places. The other-language
sets are phrases of the same lengths in espeak's German, Spanish and French voices.
"""

from __future__ import annotations

SHORT_ENGLISH = [
    # commands
    "Open the door.", "Stop.", "Turn left here.", "Wait for me.", "Close the window.",
    "Sit down.", "Call me back.", "Turn off the lights.", "Go home.", "Play some music.",
    "Pause the video.", "Next track.", "Volume up.", "Cancel my order.", "Check the weather.",
    # everyday phrases
    "Good morning.", "Thank you very much.", "Yes.", "No thanks.", "See you tomorrow.",
    "How are you?", "I am fine.", "Excuse me.", "Where is the station?", "It is raining.",
    "I need help.", "That sounds great.", "Happy birthday.", "What time is it?",
    "Welcome back.",
    # numbers
    "Seven.", "Forty two.", "Room 315.", "Call 911.", "Twenty five dollars.",
    "Flight 208 is delayed.", "Page 12.", "Three hundred.", "Platform 9.", "Chapter 4.",
    # names of people and places
    "London Bridge.", "Ask Michael.", "Visit Paris.", "Sarah is here.", "New York City.",
    "Call David now.", "Meet Emma at noon.", "Welcome to Chicago.", "Hello, John.",
    "Mount Everest.",
]

# (language, phrase): 1-5 words each, said by espeak's voice of that language
SHORT_OTHER = [
    ("de", "Guten Morgen."), ("de", "Mach die Tür zu."), ("de", "Wie spät ist es?"),
    ("de", "Ich brauche Hilfe."), ("de", "Vielen Dank."), ("de", "Bis morgen."),
    ("de", "Wo ist der Bahnhof?"), ("de", "Das Wetter ist schön."),
    ("de", "Zweiundvierzig."), ("de", "Komm bitte her."),
    ("es", "Buenos días."), ("es", "Cierra la puerta."), ("es", "¿Qué hora es?"),
    ("es", "Necesito ayuda."), ("es", "Muchas gracias."), ("es", "Hasta mañana."),
    ("es", "¿Dónde está la estación?"), ("es", "Hace buen tiempo."),
    ("es", "Cuarenta y dos."), ("es", "Ven aquí por favor."),
    ("fr", "Bonjour."), ("fr", "Ferme la porte."), ("fr", "Quelle heure est-il?"),
    ("fr", "J'ai besoin d'aide."), ("fr", "Merci beaucoup."), ("fr", "À demain."),
    ("fr", "Où est la gare?"), ("fr", "Il fait beau."),
    ("fr", "Quarante-deux."), ("fr", "Viens ici s'il te plaît."),
]

# espeak-ng voices and speeds (words per minute) of the short English rows; each phrase is said
# by two of them, so that every voice says every kind of phrase
SHORT_VOICES = [("en-us", 150), ("en-gb-x-rp", 165), ("en+f2", 140), ("en-us+m3", 175)]
OTHER_VOICES = {"de": "de", "es": "es", "fr": "fr-fr"}
