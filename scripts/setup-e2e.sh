#!/usr/bin/env bash
# What the browser test needs on Debian 12: Chromium and its driver (apt),
# Selenium (PyPI). Installs only what is missing.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-e2e: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Selenium from PyPI; where pip is missing or refuses (Debian's own python3,
# PEP 668), Debian's python3-selenium instead.
if ! python3 -c "import selenium" 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check selenium 2>/dev/null || {
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-selenium >/dev/null
  }
fi
python3 -c "import selenium" || { echo "setup-e2e: selenium is not importable by python3" >&2; exit 1; }
