"""WebRTC pieces the server and the client share, built on aiortc.

``sessions`` holds a peer connection with its tracks, state and processing stats (Session,
SessionInfo snapshots, the registry); ``ice`` the ICE server configuration, the ``Link``
header and trickle-ice-sdpfrag formats; ``offer_checks`` what a WHIP offer must carry before
a peer connection is made for it.
"""
