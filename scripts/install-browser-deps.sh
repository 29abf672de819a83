#!/usr/bin/env bash
# Test dependencies outside PyPI: Debian's Chromium (browser tests) and the npm package
# whip-whep (a third-party WHIP client run inside Chromium). Each step is skipped, with a
# message, where it cannot run; the tests that need it then skip with a reason.
set -u
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    echo "installing Debian chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends chromium >/dev/null) || echo "warning: chromium install failed"
  else
    echo "note: /usr/bin/chromium missing and apt-get unavailable: browser tests will skip"
  fi
fi
if [ -f tests/browser/package.json ]; then
  if command -v npm >/dev/null 2>&1; then
    if [ ! -d tests/browser/node_modules/whip-whep ]; then
      if [ -f tests/browser/package-lock.json ]; then
        npm ci --prefix tests/browser --no-audit --no-fund --silent || echo "warning: npm ci failed"
      else
        npm install --prefix tests/browser --no-audit --no-fund --silent || echo "warning: npm install failed"
      fi
    fi
  else
    echo "note: npm missing: the whip-whep browser test will skip"
  fi
fi
exit 0
