# Sourced by the device calls: a timeline of a log as it is written (each line stamped with the seconds since
# $start), which survives a call cut at its time limit.
# follow LOG INTO: start following LOG into INTO in the background
follow() {
  (tail -n +1 -F "$1" 2>/dev/null | while IFS= read -r l; do echo "+$(($(date +%s) - start))s $l"; done >"$2") &
}
# stop_following: end every follow of this call (after a second, for the last lines)
stop_following() {
  sleep 1
  pkill -f "tail -n +1 -F" 2>/dev/null || true
}
