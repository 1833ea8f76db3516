"""Highway: a phone-to-AI voice bridge between Twilio Media Streams and speech-to-speech models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("highway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
