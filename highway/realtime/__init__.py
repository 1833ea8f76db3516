"""Sans-IO speech-to-speech model protocols: building and reading their events."""
