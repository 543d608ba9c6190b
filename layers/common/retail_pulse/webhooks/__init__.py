"""Sending webhooks: the POST of one delivery to a client's callback_url (jobs/webhooks.py
decides what to send, when, and what an answer means)."""
