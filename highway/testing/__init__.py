"""Local stand-ins for the outside world: OpenAI Realtime, Twilio's media streams and REST
API, and PostgreSQL. Tests and benchmarks use them; `highway serve` uses the Realtime
stand-in as its agent in offline mode."""
