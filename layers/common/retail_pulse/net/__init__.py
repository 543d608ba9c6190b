"""Outbound HTTP to addresses a client chose, made safe: the image fetch and the webhook POST
both go through it.

- guard: which URLs may be requested, and the vetted address each request is pinned to
  (no private, loopback or metadata address, whatever DNS answers next);
- deadline: one wall-clock deadline per attempt, kept by a watchdog that shuts the
  attempt's sockets;
- transport: a requests session whose connections go to the pinned address and are watched;
- body: reading an answer under a byte cap, or dropping it;
- classify: whatever requests, urllib3, http.client or ssl raise, as a RequestError.

Errors are net.errors' and name no caller's purpose (an image, a webhook): each caller says
what a failure means to it.
"""
