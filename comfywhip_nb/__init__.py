"""comfywhip_nb: a WHIP (RFC 9725) server in a notebook kernel running ComfyUI-style prompts."""
