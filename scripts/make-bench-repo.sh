#!/usr/bin/env bash
# Makes a bare repository the size of a real project, for examples/workspace_overhead.rs:
# FILES files in a few dozen directories, then COMMITS commits that each rewrite CHANGED files,
# with random content (so git's deltas and zlib cannot shrink the history to nothing).
# Defaults: 4000 files, 300 commits x 40 files, about 60 MB of packed history.
#
#   scripts/make-bench-repo.sh /tmp/bench            # -> /tmp/bench/octo/big.git
#   FILES=2000 COMMITS=100 scripts/make-bench-repo.sh /tmp/small
set -euo pipefail

out=${1:?usage: $0 OUT_DIR}
files=${FILES:-4000}
commits=${COMMITS:-300}
changed=${CHANGED:-40}

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid

bare="$out/octo/big.git"
work="$out/work"
rm -rf "$bare" "$work"
mkdir -p "$bare" "$work"
git init --quiet --bare -b main "$bare"
git init --quiet -b main "$work"
cd "$work"

# A file's content: a header line and 1-6 KB of base64 text.
fill() { { echo "// $1"; head -c $((768 + RANDOM % 4096)) /dev/urandom | base64; } >"$1"; }

for ((i = 0; i < files; i++)); do
    dir="src/mod$((i % 40))/sub$((i % 7))"
    mkdir -p "$dir"
    fill "$dir/file$i.rs"
done
git add -A
git commit --quiet -m "initial import: $files files"

for ((c = 1; c <= commits; c++)); do
    for ((k = 0; k < changed; k++)); do
        i=$(((RANDOM * 32768 + RANDOM) % files))
        fill "src/mod$((i % 40))/sub$((i % 7))/file$i.rs"
    done
    git commit --quiet -am "change $c"
done

git push --quiet "$bare" main
cd /
rm -rf "$work"
git --git-dir "$bare" gc --quiet --aggressive --prune=now 2>/dev/null || git --git-dir "$bare" gc --quiet
echo "$bare: $(git --git-dir "$bare" count-objects -vH | sed -n 's/^size-pack: //p') packed," \
    "$(git --git-dir "$bare" ls-tree -r main | wc -l) files, $(git --git-dir "$bare" rev-list --count main) commits"
