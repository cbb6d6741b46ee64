#!/usr/bin/env bash
# Set up rs3l on a fresh machine: a virtualenv in .venv with pinned dependencies.
#   bash scripts/setup.sh              # simulation + training (CPU torch)
#   bash scripts/setup.sh --with-slurm # also the Debian packages of a single-node Slurm (tests):
#                                      # slurmctld slurmd slurm-client munge, via apt-get (root);
#                                      # their system services are neither started nor enabled
#   bash scripts/setup.sh --with-browser # also the Debian package chromium (headless browser of the
#                                      # `rs3l ui` test), via apt-get (root), without recommended packages
#   bash scripts/setup.sh --no-profile # do not link the slurm profile into ~/.config/snakemake
# It also links rs3l's Slurm profile to $XDG_CONFIG_HOME/snakemake/slurm (~/.config/snakemake/slurm)
# so that `snakemake --profile slurm` finds it, unless a profile of that name already exists
# (scripts/install-profile.sh; an existing one is never replaced).
# GPU users: install the CUDA build of torch 2.13.0 into .venv first (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
with_slurm=0
with_browser=0
with_profile=1
for arg in "$@"; do
    case $arg in
        --with-slurm) with_slurm=1 ;;
        --with-browser) with_browser=1 ;;
        --no-profile) with_profile=0 ;;
        *) echo "setup: unknown option $arg (use --with-slurm, --with-browser, --no-profile)" >&2; exit 1 ;;
    esac
done

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
pip_install() {
    # pip's notes about unreachable local index folders are noise; its errors still fail the script
    python -m pip install --quiet "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
pip_install --upgrade pip
# Pin the CPU build of torch explicitly: a loose pin pulls a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || pip_install "torch==2.13.0"
pip_install -e ".[test]"

# Debian packages: those of the private test cluster (scripts/slurm-local.sh) and the headless
# browser of the UI test. Debian's maintainer scripts would start and enable munge, slurmctld and
# slurmd as system services: a policy-rc.d that denies every start is in place during the install
# (an existing one is kept as it is), and services the install enabled are disabled again. Nothing
# else of the system is changed.
daemon_pids() { local n; for n in munged slurmctld slurmd; do pgrep -x "$n" || true; done | tr '\n' ' '; }
# install_packages "<apt-get options>" package...
install_packages() {
    local options=$1 services=(munge slurmctld slurmd) missing=() p s
    shift
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    (( ${#missing[@]} )) || return 0
    [[ $(id -u) == 0 ]] || { echo "setup: installing ${missing[*]} needs root (apt-get)" >&2; exit 1; }
    echo "setup: installing the Debian packages ${missing[*]} (apt-get); no system service is started or enabled"
    local policy=/usr/sbin/policy-rc.d ours="# rs3l scripts/setup.sh: deny service starts during apt-get install"
    local placed=0
    if [[ -e $policy || -L $policy ]]; then
        echo "setup: keeping the existing $policy"
    else
        printf '#!/bin/sh\n%s\nexit 101\n' "$ours" > "$policy.rs3l.$$"
        chmod 755 "$policy.rs3l.$$"
        # no clobbering: the link fails if a policy-rc.d appeared meanwhile
        if ln "$policy.rs3l.$$" "$policy" 2>/dev/null; then placed=1; fi
        rm -f "$policy.rs3l.$$"
        # shellcheck disable=SC2064
        [[ $placed == 1 ]] && trap "grep -qxF '$ours' $policy 2>/dev/null && rm -f $policy" EXIT
    fi
    declare -A enabled_before
    for s in "${services[@]}"; do
        enabled_before[$s]=$(systemctl is-enabled "$s" 2>/dev/null || true)
    done
    local before_pids
    before_pids=" $(daemon_pids) "
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $options "${missing[@]}" >/dev/null
    if [[ $placed == 1 ]]; then
        grep -qxF "$ours" "$policy" 2>/dev/null && rm -f "$policy"
        trap - EXIT
    fi
    for s in "${services[@]}"; do
        if [[ $(systemctl is-enabled "$s" 2>/dev/null || true) == enabled && ${enabled_before[$s]} != enabled ]]; then
            systemctl disable --quiet "$s" 2>/dev/null && echo "setup: disabled the system service $s (enabled by its package)" || true
        fi
    done
    # an existing policy-rc.d may have let the packages start their services: stop those again
    local pid
    for pid in $(daemon_pids); do
        [[ $before_pids == *" $pid "* ]] && continue
        # private clusters (scripts/slurm-local.sh) name their own config; system daemons do not
        tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qE -- '(^| )(-f |--socket)' && continue
        s=$(cat "/proc/$pid/comm" 2>/dev/null || true)
        [[ $s == munged ]] && s=munge
        echo "setup: the install started the system service $s (pid $pid); stopping it"
        invoke-rc.d --force "$s" stop >/dev/null 2>&1 || service "$s" stop >/dev/null 2>&1 || true
    done
}
if [[ $with_slurm == 1 ]]; then
    install_packages "" slurmctld slurmd slurm-client munge
fi
if [[ $with_browser == 1 ]]; then
    # no recommended packages: they would bring services (upower, udev, a notification daemon)
    install_packages "--no-install-recommends" chromium fonts-liberation
fi
if [[ $with_profile == 1 ]]; then
    bash scripts/install-profile.sh
fi
echo "rs3l set up in $(pwd)/.venv"
