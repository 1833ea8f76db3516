"""Telephony: Highway's side of Twilio (REST calls, webhooks, media streams)."""
