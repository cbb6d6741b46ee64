#!/usr/bin/env bash
# Make `snakemake --profile slurm` find rs3l's Slurm profile: link this repository's
# workflow/profiles/slurm to $XDG_CONFIG_HOME/snakemake/slurm (~/.config/snakemake/slurm),
# where Snakemake looks for profiles by name. An existing profile of that name that is not
# this link is never replaced: the script leaves it alone and says how to use rs3l's instead.
#   bash scripts/install-profile.sh     (scripts/setup.sh runs it)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
src=$repo/workflow/profiles/slurm
config_home=${XDG_CONFIG_HOME:-${HOME:?HOME is not set}/.config}
dest=$config_home/snakemake/slurm

say() { echo "install-profile: $*"; }
instead() {
    say "use rs3l's profile by its path instead: snakemake --profile $src ..."
    say "(from the repository root: snakemake --profile workflow/profiles/slurm ...)"
}

if [[ -L $dest ]]; then
    target=$(readlink -f "$dest" 2>/dev/null || true)
    if [[ $target == "$(readlink -f "$src")" ]]; then
        say "snakemake --profile slurm -> $src (already linked)"
        exit 0
    fi
    say "$dest exists (a link to $(readlink "$dest")) and is not this checkout's profile; left as it is"
    instead
    exit 0
fi
if [[ -e $dest ]]; then
    say "$dest exists and is not rs3l's profile; left as it is"
    instead
    exit 0
fi
mkdir -p "$(dirname "$dest")"
ln -sT "$src" "$dest"  # -T: never into an existing folder
say "snakemake --profile slurm -> $src (linked at $dest)"
