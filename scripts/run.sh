#!/usr/bin/env bash
# Install (first time only) and start one emulated device: scripts/run.sh [softap-sim run options]
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$VENV/bin/softap-sim" run "$@"
