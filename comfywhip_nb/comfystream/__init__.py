"""ComfyStream compatibility: what ComfyStream's own clients expect of a server.

``offer`` serves ``POST /offer`` (a send-receive session that returns the processed media)
and ``POST /prompt``; ``control`` answers the ``control`` data channel those clients open
(prompt updates, pause/resume, node listings, resolution).
"""
