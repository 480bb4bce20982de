#!/bin/sh
# pgec2 host bootstrap, rendered by pgec2-operator for one host.
#
# Installs pgec2-agent (refusing a binary whose sha256 differs), writes the host spec, and runs
# `pgec2-agent host apply`: its JSON report is this script's stdout and its exit status is this
# script's. Idempotent: running it again downloads nothing when the agent is already right and
# changes nothing on a converged host. It carries no secrets (AWS credentials come from the
# instance profile).
set -eu
umask 022

AGENT_URL=@AGENT_URL@
AGENT_SHA256=@AGENT_SHA256@
INSTALL_DIR=@INSTALL_DIR@
SPEC_BASE64=@SPEC_BASE64@

AGENT="$INSTALL_DIR/pgec2-agent"
SPEC="$INSTALL_DIR/host-spec.json"

log() {
    printf 'pgec2-bootstrap: %s\n' "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d ' ' -f 1
    else
        shasum -a 256 "$1" | cut -d ' ' -f 1
    fi
}

# Copies a local agent (file:// URL or absolute path) or downloads it with retries and timeouts.
fetch() {
    case "$AGENT_URL" in
        file://*) cp "${AGENT_URL#file://}" "$1" ;;
        /*) cp "$AGENT_URL" "$1" ;;
        *) curl --fail --silent --show-error --location \
                --connect-timeout 10 --max-time 300 \
                --retry 5 --retry-delay 3 --retry-connrefused \
                --output "$1" "$AGENT_URL" ;;
    esac
}

install_agent() {
    if [ -x "$AGENT" ] && [ "$(sha256_of "$AGENT")" = "$AGENT_SHA256" ]; then
        log "agent $AGENT is installed (sha256 $AGENT_SHA256)"
        return 0
    fi
    download="$AGENT.download.$$"
    trap 'rm -f "$download"' EXIT
    log "installing the agent from $AGENT_URL"
    fetch "$download" || die "failed to get the agent from $AGENT_URL: check the URL and the host's network"
    actual=$(sha256_of "$download")
    if [ "$actual" != "$AGENT_SHA256" ]; then
        die "the agent from $AGENT_URL has sha256 $actual, expected $AGENT_SHA256: refusing to install it"
    fi
    chmod 0755 "$download"
    mv -f "$download" "$AGENT"
}

write_spec() {
    printf '%s' "$SPEC_BASE64" | base64 -d >"$SPEC.tmp" || die "failed to decode the host spec into $SPEC.tmp"
    chmod 0644 "$SPEC.tmp"
    mv -f "$SPEC.tmp" "$SPEC"
}

mkdir -p "$INSTALL_DIR" || die "failed to create $INSTALL_DIR"
install_agent
write_spec
# The agent command as pgec2-contract renders it: host apply "$SPEC".
exec "$AGENT" @HOST_APPLY@
