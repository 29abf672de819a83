"""The HTTP face of the server (aiohttp, on the server's event loop; never torch work).

``whip`` answers RFC 9725 WHIP (POST/PATCH/DELETE/OPTIONS on ``/whip``), ``whep`` lets viewers
watch a channel's processed video, ``events`` streams server-sent events about a session,
``api_routes`` serves health, stats, metrics, prompts, preview JPEGs and the browser page.
``middleware`` wraps every handler (problem+json errors, bearer auth, rate limit, CORS),
``bodies`` reads request bodies, ``ratelimit`` is the pure limiter and ``trace`` records
the requests and SDP a session exchanged, for the inspector widget.
"""
