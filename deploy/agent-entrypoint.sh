#!/usr/bin/env bash
# The agent container: an interactive Claude Code with bridge as its MCP server, inside tmux.
# Messages arrive through Claude Code's session inbox (2.1.224 and later): no flag, no dialog.
# BRIDGE_CHANNEL_FLAG=1 adds --dangerously-load-development-channels server:bridge for older
# versions, whose only push is the channel. An agent waits for work, so it runs interactive;
# tmux gives it a terminal, and `make attach NAME=...` lets a person look in.
# BRIDGE_CLIENT=codex (an agent NAME:ROLE:codex; the image's target agent-codex) runs OpenAI's
# Codex CLI instead: bridge registered in $CODEX_HOME/config.toml (bridge/ops/codex_home.py),
# the role prompt as its first prompt; messages wake it through `codex queue`.
#
#   agent-entrypoint.sh            start the session and stay up while it runs (the default)
#   agent-entrypoint.sh --session  what runs inside tmux: Claude Code (or Codex) itself
set -euo pipefail

DEPLOY_DIR=${BRIDGE_DEPLOY_DIR:-/opt/bridge/deploy}
PROMPT_DIR=${BRIDGE_PROMPT_DIR:-/opt/bridge/prompts}
RUN_DIR=${BRIDGE_RUN_DIR:-/tmp/bridge-agent}   # tmpfs: the rendered config holds the URL
WORKDIR=${BRIDGE_WORKDIR:-/workspace}
SESSION=agent
# a dedicated tmux server: its panes get this environment, and stopping it touches nothing else
TMUX_SOCKET=${BRIDGE_TMUX_SOCKET:-bridge}
tmux() { command tmux -L "$TMUX_SOCKET" "$@"; }
DIALOG_SECONDS=${BRIDGE_DIALOG_SECONDS:-120}
CHANNEL_DIALOG_SECONDS=${BRIDGE_CHANNEL_DIALOG_SECONDS:-15}

die() { echo "agent-entrypoint: $*" >&2; exit 64; }

CLIENT=${BRIDGE_CLIENT:-claude}
case "$CLIENT" in
  claude|codex) ;;
  *) die "BRIDGE_CLIENT='$CLIENT': use claude (Claude Code, the default) or codex (OpenAI's Codex CLI)" ;;
esac
export CODEX_HOME=${CODEX_HOME:-$HOME/.codex}

case "${BRIDGE_CHANNEL_FLAG:-0}" in
  1) CHANNEL_FLAG=1 ;;
  0) CHANNEL_FLAG=0 ;;
  *) die "BRIDGE_CHANNEL_FLAG='$BRIDGE_CHANNEL_FLAG': use 1 (also load bridge as a development channel, for Claude Code before 2.1.224) or 0 (the default: the session inbox, no flag)" ;;
esac

session() {
  cd "$WORKDIR"
  local status=0 channel=()
  if [ "$CLIENT" = codex ]; then
    # CODEX_ARGS is split on purpose: extra flags, e.g. "-m gpt-5.1" or "-c key=value"
    # shellcheck disable=SC2086
    codex ${CODEX_ARGS:-} "$(cat "$RUN_DIR/prompt.md")" || status=$?
    echo "$status" > "$RUN_DIR/claude.status"
    tmux wait-for -S "$SESSION-done"
    return
  fi
  if [ "$CHANNEL_FLAG" = 1 ]; then
    channel=(--dangerously-load-development-channels server:bridge)
  fi
  # CLAUDE_ARGS is split on purpose: extra flags, e.g. "--permission-mode acceptEdits"
  # shellcheck disable=SC2086
  claude --mcp-config "$RUN_DIR/mcp.json" --strict-mcp-config \
    "${channel[@]}" \
    --allowedTools mcp__bridge \
    --append-system-prompt "$(cat "$RUN_DIR/prompt.md")" \
    ${CLAUDE_ARGS:-} || status=$?
  echo "$status" > "$RUN_DIR/claude.status"
  tmux wait-for -S "$SESSION-done"
}

# Answer the dialogs a fresh start shows (tests/support/claude_driver.py's list, Claude Code 2.1.328), then
# stop watching: from then on the screen belongs to the agent and to whoever attaches.
# Ready is the input prompt, a line that starts with "❯" (a dialog's choice reads "❯ 1.").
# With the channel flag the channels dialog may come up after the prompt, so it is given
# CHANNEL_DIALOG_SECONDS more; it never comes while channels are off (telemetry, account).
accept_dialogs() {
  local deadline=$((SECONDS + DIALOG_SECONDS)) screen channel=unseen prompt_since=""
  while [ $SECONDS -lt $deadline ] && tmux has-session -t "$SESSION" 2>/dev/null; do
    screen=$(tmux capture-pane -p -t "$SESSION" 2>/dev/null || true)
    if grep -q "I am using this for local development" <<<"$screen"; then
      tmux send-keys -t "$SESSION" Enter; channel=confirmed; sleep 2
    elif grep -qE "Yes, I trust this folder|Do you trust the files" <<<"$screen"; then
      tmux send-keys -t "$SESSION" Enter; sleep 2
    elif grep -q "Detected a custom API key" <<<"$screen"; then
      tmux send-keys -t "$SESSION" Up; tmux send-keys -t "$SESSION" Enter; sleep 2
    elif grep -q "Choose the text style" <<<"$screen"; then
      tmux send-keys -t "$SESSION" Enter; sleep 2
    elif grep -E "^[[:space:]]*❯" <<<"$screen" | grep -qvE "❯[[:space:]]*[0-9]+\."; then
      if [ "$CHANNEL_FLAG" != 1 ]; then
        echo "agent-entrypoint: Claude Code is up; make attach NAME=$BRIDGE_NAME to watch"
        return 0
      elif [ $channel = confirmed ]; then
        echo "agent-entrypoint: Claude Code is up with the bridge channel; make attach NAME=$BRIDGE_NAME to watch"
        return 0
      fi
      prompt_since=${prompt_since:-$SECONDS}
      if [ $((SECONDS - prompt_since)) -ge "$CHANNEL_DIALOG_SECONDS" ]; then
        echo "agent-entrypoint: Claude Code is up, but did not ask to load the bridge channel: channels are off for it (DISABLE_TELEMETRY and the like, or the account), so messages arrive only if it has the session inbox (Claude Code 2.1.224 or newer); make attach NAME=$BRIDGE_NAME to watch" >&2
        return 0
      fi
      sleep 0.5
    else
      sleep 0.5
    fi
  done
  echo "agent-entrypoint: no ready prompt after ${DIALOG_SECONDS}s (a login or a new dialog?); make attach NAME=$BRIDGE_NAME to see the screen" >&2
}

# Codex: the first prompt runs at once (its first bridge tool call tells bridge the thread);
# the screen is ready once the input box (a line starting "› ") is back.
codex_up() {
  local deadline=$((SECONDS + DIALOG_SECONDS)) screen
  while [ $SECONDS -lt $deadline ] && tmux has-session -t "$SESSION" 2>/dev/null; do
    screen=$(tmux capture-pane -p -t "$SESSION" 2>/dev/null || true)
    if grep -q "Sign in with ChatGPT" <<<"$screen"; then
      echo "agent-entrypoint: Codex is not logged in: make attach NAME=$BRIDGE_NAME and sign in (kept in the home volume), or give make up OPENAI_API_KEY" >&2
      return 0
    elif grep -qE "^› " <<<"$screen" && ! grep -qi "esc to interrupt" <<<"$screen"; then
      echo "agent-entrypoint: Codex is up; make attach NAME=$BRIDGE_NAME to watch"
      return 0
    fi
    sleep 0.5
  done
  echo "agent-entrypoint: no Codex input box after ${DIALOG_SECONDS}s (a login or a new dialog?); make attach NAME=$BRIDGE_NAME to see the screen" >&2
}

if [ "${1:-}" = "--session" ]; then
  session
  exit 0
fi

[ -n "${BRIDGE_NAME:-}" ] || die "BRIDGE_NAME is not set; start agents with make up AGENTS='alice:developer ...'"
[ -n "${BRIDGE_REDIS_URL:-}" ] || die "BRIDGE_REDIS_URL is not set; give make up REDIS_URL=redis://:PASSWORD@HOST:6379/0 (a container has no embedded Redis)"
BRIDGE_ROLE=${BRIDGE_ROLE:-developer}
export BRIDGE_ROLE
prompt="$PROMPT_DIR/$BRIDGE_ROLE.md"
if [ ! -r "$prompt" ]; then
  die "no prompt for role '$BRIDGE_ROLE' in $PROMPT_DIR; roles: $(cd "$PROMPT_DIR" 2>/dev/null && ls ./*.md 2>/dev/null | sed 's|^\./||; s|\.md$||' | tr '\n' ' ')"
fi
# telemetry switches only the channel off; the session inbox works without it
for var in DISABLE_TELEMETRY DO_NOT_TRACK CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC; do
  if [ "$CLIENT" = claude ] && [ "$CHANNEL_FLAG" = 1 ] && [ -n "${!var:-}" ]; then
    echo "agent-entrypoint: WARNING $var is set: Claude Code switches channels off with it, so messages will not be pushed over the channel; unset it" >&2
  fi
done
if [ "$CLIENT" = claude ] && [ -z "${ANTHROPIC_API_KEY:-}" ] && [ ! -r /run/claude/credentials.json ] && [ ! -s "$HOME/.claude/.credentials.json" ]; then
  echo "agent-entrypoint: no ANTHROPIC_API_KEY and no login: make attach NAME=$BRIDGE_NAME and log in (/login); the login is kept in the home volume" >&2
fi

mkdir -p "$RUN_DIR"
chmod 700 "$RUN_DIR"
BRIDGE_BIN=$(command -v bridge) || die "bridge is not on PATH"
export BRIDGE_BIN
python3 "$DEPLOY_DIR/render.py" "$prompt" "$RUN_DIR/prompt.md"
if [ "$CLIENT" = codex ]; then
  command -v codex >/dev/null || die "codex is not on PATH: an agent NAME:ROLE:codex needs the image's target agent-codex (make up builds it for such an agent)"
  # the role prompt is Codex's first prompt; its first bridge tool call names the thread
  printf '\n\nStart now: call list_participants once (that also tells bridge where to deliver your teammates'"'"' messages), then work as your role says.\n' >> "$RUN_DIR/prompt.md"
  # bridge's own Python: the config is written by bridge.ops.codex_home (bridge/ops/codex_home.py)
  "$(dirname "$(readlink -f "$BRIDGE_BIN")")/python" -m bridge.ops.codex_home "$CODEX_HOME" "$WORKDIR" \
    || die "could not write $CODEX_HOME/config.toml (above)"
  if [ -n "${OPENAI_API_KEY:-}" ]; then
    # Codex does not read the key from its environment: log in with it (kept in the home volume)
    printenv OPENAI_API_KEY | codex login --with-api-key >/dev/null \
      || echo "agent-entrypoint: codex login --with-api-key failed" >&2
  elif [ ! -s "$CODEX_HOME/auth.json" ]; then
    echo "agent-entrypoint: no OPENAI_API_KEY and no Codex login: make attach NAME=$BRIDGE_NAME and sign in; the login is kept in the home volume" >&2
  fi
else
  mkdir -p "$HOME/.claude"
  python3 "$DEPLOY_DIR/render.py" "$DEPLOY_DIR/mcp.json" "$RUN_DIR/mcp.json"
  python3 "$DEPLOY_DIR/claude_home.py" "$HOME" "$WORKDIR"
  if [ -r /run/claude/credentials.json ]; then
    # a copy: Claude Code rewrites the file when it refreshes the token, the mount is read-only
    install -m 600 /run/claude/credentials.json "$HOME/.claude/.credentials.json"
  fi
fi

# One line per check in the container log (the URL's password is redacted); not fatal:
# bridge serve waits and reconnects while Redis is away.
bridge doctor || echo "agent-entrypoint: bridge doctor found a problem (above); starting anyway" >&2

rm -f "$RUN_DIR/claude.status"
tmux new-session -d -s "$SESSION" -x 200 -y 50 "$0 --session"
echo "agent-entrypoint: $BRIDGE_NAME ($BRIDGE_ROLE) started in room ${BRIDGE_ROOM:-main}"

stop() { tmux kill-server 2>/dev/null || true; }
trap stop TERM INT
if [ "$CLIENT" = codex ]; then codex_up & else accept_dialogs & fi
tmux wait-for "$SESSION-done" &
wait $! || true
stop
status=$(cat "$RUN_DIR/claude.status" 2>/dev/null || echo 0)
if [ "$CLIENT" = codex ]; then
  # its daemon (and the bridge it runs) outlives the TUI: stop it with the container
  codex app-server daemon stop >/dev/null 2>&1 || true
  echo "agent-entrypoint: Codex exited with status $status"
else
  echo "agent-entrypoint: Claude Code exited with status $status"
fi
exit "$status"
