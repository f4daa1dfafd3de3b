#!/bin/sh
# crewtui session shim: keeps one agent running after the dashboard that started it is gone (like conmon).
#
# Usage: /bin/sh shim.sh DIR -- AGENT_ARGV...
#
# The runtime starts this with setsid and DIR already holding stdin.fifo. The outer sh starts the supervisor
# in the background and exits at once, so the supervisor is nobody's child that could die with the runtime.
# The supervisor gives the agent DIR/stdin.fifo as stdin and DIR/stdout.log, DIR/stderr.log as output, writes
# DIR/pid.json (pids and /proc start times, so a restarted runtime can tell its shim from a reused pid),
# waits for the agent and writes DIR/exit.json. Both JSON files are written to a .tmp file and renamed, so a
# reader never sees half of one. Anything on the shim's own stdout/stderr before pid.json exists is the
# runtime's start-up pipe: closing it tells the runtime that pid.json is ready.
#
# The agent argv arrives as "$@" and is never pasted into a script or evaluated.
# Kept to dash builtins where it runs for long (the supervisor is resident for the agent's whole life and
# must stay under 2 MB); `mv` and `date` are short-lived helpers.

# A terminal session's recorder: run by dtach on the pseudo-terminal it holds (see "Terminal sessions" below).
# It gives that terminal a size (dtach leaves it at 0x0 until someone attaches), runs the agent under script(1),
# which copies everything the agent writes to DIR/stdout.log as it comes, and records the agent's exit code in
# DIR/agent-exit (script -e: the agent's code, 128+N for signal N), since dtach's own is always 1.
if [ "${1-}" = "--pty" ]; then
    DIR=$2
    # Session leader of dtach's terminal: a hang-up or a stray signal must not cost the exit record. Caught, not
    # ignored (an ignored signal would be inherited by the agent).
    trap ':' HUP INT QUIT TERM
    stty rows "$3" cols "$4" 2>/dev/null
    tty >"$DIR/pts" 2>/dev/null  # where the runtime reads the size people attached with (its peek draws to it)
    cd "$5" || exit 2
    SHELL=/bin/sh script -qfe -O "$DIR/stdout.log" -c "$6"
    CODE=$?
    umask 077
    printf '%s\n' "$CODE" >"$DIR/agent-exit.tmp" && mv -f -- "$DIR/agent-exit.tmp" "$DIR/agent-exit"
    exit 0
fi

if [ "${1-}" != "--supervise" ]; then
    if [ $# -lt 3 ] || [ "$2" != "--" ]; then
        echo "usage: sh shim.sh DIR -- AGENT_ARGV..." >&2
        exit 2
    fi
    # Re-exec rather than `( ... ) &`: a fresh sh has its own $$ (dash has no $BASHPID) and a small image.
    # setsid(1) makes the supervisor the leader of its own session and process group, so the runtime can
    # signal the whole session as -SHIM_PID. Without it the group is this outer sh's (still one session).
    SETSID=
    for candidate in /usr/bin/setsid /bin/setsid; do
        if [ -x "$candidate" ]; then
            SETSID=$candidate
            break
        fi
    done
    if [ -z "$SETSID" ]; then
        SETSID=$(command -v setsid 2>/dev/null) || SETSID=
    fi
    if [ -n "$SETSID" ]; then
        "$SETSID" /bin/sh "$0" --supervise "$@" &
    else
        /bin/sh "$0" --supervise "$@" &
    fi
    exit 0
fi

# The runtime kills sessions by signalling the whole process group; those signals are meant for the agent.
# Catching them (never ignoring them: an ignored signal would be inherited by the agent) keeps the shim
# alive to record how the agent ended. dash resets caught signals to default in the children it starts.
trap ':' HUP INT QUIT TERM USR2 ALRM
# USR1 (sent to the shim alone, never to the group) closes the shim's end of stdin.fifo: an agent that reads
# turns until end of input (Claude Code, Codex's app-server) then finishes and exits.
trap 'exec 3<&-' USR1

shift
DIR=$1
shift 2
# A terminal session (`tty = true`): "ROWS COLS" and the agent's argv as one shell-quoted command (script(1)
# takes nothing else; the runtime quotes it with shlex, so it runs exactly that argv).
TTY=${CREWTUI_TTY-}
TTY_CMD=${CREWTUI_TTY_CMD-}
unset CREWTUI_TTY CREWTUI_TTY_CMD
WORKDIR=$PWD
SHIM=$0

# For the runtime, in case it has to give up on this start before pid.json exists.
echo "shim-pid $$"

# Where the machine allows, the session has a cgroup of its own: join it before starting the agent, so every
# process the agent starts is in it, whatever it does with sessions and process groups (see containment.py).
if [ -n "${CREWTUI_CGROUP-}" ]; then
    echo $$ >"$CREWTUI_CGROUP/cgroup.procs" 2>/dev/null || echo "shim: could not join $CREWTUI_CGROUP" >&2
fi
unset CREWTUI_CGROUP

if [ ! -d "$DIR" ]; then
    echo "shim: session dir $DIR does not exist" >&2
    exit 2
fi

# Sets ST to field 22 (starttime, clock ticks since boot) of /proc/$1/stat, or to "" if there is none.
# comm (field 2) may hold spaces, parentheses and even newlines, so everything through the LAST ") " goes.
proc_start() {
    ST=
    _stat=
    while IFS= read -r _line || [ -n "$_line" ]; do
        _stat="$_stat$_line "
        _line=
    done 2>/dev/null <"/proc/$1/stat"
    case $_stat in
        *") "*) ;;
        *) return 0 ;;
    esac
    _stat=${_stat##*) }
    set -f
    # shellcheck disable=SC2086  # word splitting of the numeric fields is the point
    set -- $_stat
    set +f
    # Field 3 (state) is now $1, so field 22 is $20.
    [ $# -ge 20 ] || return 0
    shift 19
    case $1 in
        '' | *[!0-9]*) ;;
        *) ST=$1 ;;
    esac
}

# True if $1 is a plain decimal number, so it can go into JSON as is (a `date` without %N prints "N").
is_number() {
    case $1 in
        '' | *[!0-9.]* | .* | *. | *.*.*) return 1 ;;
    esac
    return 0
}

# Writes $2 into DIR/$1 atomically.
write_json() {
    printf '%s\n' "$2" >"$DIR/$1.tmp" && mv -f -- "$DIR/$1.tmp" "$DIR/$1"
}

# The shim's own files (logs, pid.json, exit.json) are owner-only whatever the umask: they hold the task's
# output. The agent gets the user's umask back (the runtime passes it in CREWTUI_AGENT_UMASK), so what it
# writes in the user's tree is as the user expects.
AGENT_UMASK=${CREWTUI_AGENT_UMASK-}
unset CREWTUI_AGENT_UMASK
case $AGENT_UMASK in
    '' | *[!0-7]*) AGENT_UMASK=$(umask) ;;  # not given: the agent keeps the umask the shim started with
esac
umask 077

if [ ! -p "$DIR/stdin.fifo" ]; then
    mkfifo -m 600 "$DIR/stdin.fifo"
fi
# The shim holds the fifo read-write, so opening never blocks and the agent never sees end of input while the
# shim holds it. The agent gets a read-only end of its own (opening it does not block: fd 3 is a writer), so
# when the shim lets go of fd 3 (USR1, above) the agent reads end of input after what was written.
exec 3<>"$DIR/stdin.fifo"

# A background job of a non-interactive sh starts with SIGINT and SIGQUIT ignored, and a shell cannot undo
# that for its children; GNU env can. An argv[0] containing "=" would be taken by env as an assignment.
RESET_SIGNALS=
case ${1-} in
    *=*) ;;
    *) env --default-signal=INT,QUIT --version >/dev/null 2>&1 && RESET_SIGNALS=1 ;;
esac

# The logs are made here, owner-only; the agent's redirections below truncate them and keep their mode. The agent
# starts with the user's umask (a plain command: the background job execs it at once), and the shim takes 077
# back for its own records.
: >"$DIR/stdout.log"
: >"$DIR/stderr.log"
umask "$AGENT_UMASK"
if [ -n "$TTY" ]; then
    # Terminal sessions: dtach holds a pseudo-terminal and a socket (DIR/tty.sock, relative: a socket path holds
    # 107 bytes) through which people attach and the runtime types; it is a session of its own (dtach -N calls
    # setsid), so the runtime's signals to this shim's group do not cut the chain; the runtime stops the agent
    # itself. The shim watches dtach as it watches any agent.
    rm -f "$DIR/agent-exit" "$DIR/tty.sock"
    # shellcheck disable=SC2086  # "ROWS COLS"
    set -- $TTY
    (cd "$DIR" && exec env --default-signal=INT,QUIT dtach -N tty.sock -r winch \
        /bin/sh "$SHIM" --pty "$DIR" "$1" "$2" "$WORKDIR" "$TTY_CMD") \
        </dev/null >/dev/null 2>>"$DIR/stderr.log" 3<&- &
elif [ -n "$RESET_SIGNALS" ]; then
    env --default-signal=INT,QUIT -- "$@" <"$DIR/stdin.fifo" >"$DIR/stdout.log" 2>"$DIR/stderr.log" 3<&- &
else
    "$@" <"$DIR/stdin.fifo" >"$DIR/stdout.log" 2>"$DIR/stderr.log" 3<&- &
fi
AGENT_PID=$!
umask 077

proc_start $$
SHIM_START=${ST:-null}
proc_start "$AGENT_PID"
# An agent that ends at once (`true`) may already be reaped: no start time to read. 0 matches no live process,
# so a later look never takes a stranger for it; the shim itself (its pid and start time) is what is watched.
AGENT_START=${ST:-0}

PIDS="{\"shim_pid\": $$, \"agent_pid\": $AGENT_PID, "
PIDS="$PIDS\"shim_start\": $SHIM_START, \"agent_start\": $AGENT_START"
if [ -n "$TTY" ]; then
    PIDS="$PIDS, \"tty\": true"
fi
PIDS="$PIDS}"
if ! write_json pid.json "$PIDS"; then
    # Without pid.json nobody could ever find, steer or stop this agent.
    kill -KILL "$AGENT_PID" 2>/dev/null
    echo "shim: cannot write $DIR/pid.json" >&2
    exit 1
fi

# Closing the start-up pipe is the runtime's signal that pid.json is there.
exec >/dev/null 2>&1

while :; do
    wait "$AGENT_PID"
    CODE=$?
    # A caught signal interrupts `wait` with 128+n while the agent may still be running (or be an unreaped
    # zombie, which still has its /proc entry). Only a status from a reaped agent is its real exit status.
    proc_start "$AGENT_PID"
    if [ -z "$ST" ] || [ "$ST" != "$AGENT_START" ]; then
        break
    fi
done

if [ -n "$TTY" ]; then
    # dtach's code is always 1: the agent's is what the recorder wrote (none: the chain was cut, say 1).
    CODE=1
    if [ -f "$DIR/agent-exit" ]; then
        read -r CODE <"$DIR/agent-exit"
        case $CODE in
            '' | *[!0-9]*) CODE=1 ;;
        esac
    fi
fi

ENDED_AT=$(date +%s.%N 2>/dev/null)
is_number "$ENDED_AT" || ENDED_AT=$(date +%s 2>/dev/null)
is_number "$ENDED_AT" || ENDED_AT=null

# 129-192 may be signal 1-64 (Linux has no more); 193-255 is only ever the agent's own code (`exit 255`).
if [ "$CODE" -gt 128 ] && [ "$CODE" -le 192 ]; then
    write_json exit.json "{\"code\": $CODE, \"ended_at\": $ENDED_AT, \"signal\": $((CODE - 128))}"
else
    write_json exit.json "{\"code\": $CODE, \"ended_at\": $ENDED_AT}"
fi
exit 0
