"""Frames through a prompt and back out, on worker threads (never the event loop).

``frames`` converts ``av.VideoFrame`` to and from torch IMAGE tensors and encodes preview
JPEGs; ``processor`` pumps a session's newest frame through its prompt on a worker thread
and keeps the stats; ``egress`` turns processed frames into outgoing video tracks (WHEP
viewers, the echo) with one shared encoder per channel.
"""
