#!/usr/bin/env bash
# Test dependency outside PyPI: Debian's GStreamer 1.22 with webrtcbin, driven by
# scripts/gst_whip_publish.py under Debian's own /usr/bin/python3 (python3-gi belongs to it).
# Skipped, with a message, where it cannot run; tests/test_gstreamer_publisher.py then skips
# with a reason. Nothing is installed when everything is already there.
set -u
PACKAGES="gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-nice python3-gi gir1.2-gstreamer-1.0
  gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 iproute2"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  echo "installing Debian GStreamer for the webrtcbin publisher tests:$missing"
  # shellcheck disable=SC2086
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing \
      >/dev/null 2>&1 ||
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends $missing >/dev/null)) ||
    echo "warning: GStreamer install failed: the GStreamer publisher tests will skip"
else
  echo "note: apt-get unavailable or not root: the GStreamer publisher tests will skip"
fi
exit 0
