#!/usr/bin/env bash
# Install the system programs tether's tests and demo need, when missing.
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v git >/dev/null 2>&1 || need+=(git)
ls /usr/lib/*/libnss_wrapper.so >/dev/null 2>&1 || need+=(libnss-wrapper)
# The non-root tests (tests/harness/nonroot.py) make a venv from the system's python3.
if [ -x /usr/bin/python3 ] && command -v dpkg-query >/dev/null 2>&1; then
  dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'ok installed' || need+=(python3-venv)
fi
# A real single-node Slurm for the cluster tests (tests/harness/slurm.py).
command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ] || need+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ] || need+=(munge)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "tether needs: ${need[*]} -- run: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
