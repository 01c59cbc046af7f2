#!/usr/bin/env bash
# Refreshes the embedded crawler-user-agents list (MIT, Martin Monperrus et
# al.) from its npm package: the JSON, its licence and the version line of
# README.md. Usage: src/ingest/bots/refresh.sh [VERSION]   (default: latest)
# Then run the bots tests: a refreshed list must still compile, every one of
# its instances must be a bot and no real browser may become one.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${1:-latest}"
json="$here/crawler-user-agents.json"
licence="$here/LICENSE-crawler-user-agents"
readme="$here/README.md"

for tool in npm node tar; do
    command -v "$tool" >/dev/null || { echo "refresh.sh: needs $tool" >&2; exit 1; }
done

count() { node -e 'const l = require(process.argv[1]); if (!Array.isArray(l)) throw new Error("not an array"); for (const [i, e] of l.entries()) if (typeof e.pattern !== "string") throw new Error("entry " + i + " has no pattern"); console.log(l.length)' "$1"; }

old_version="$(sed -n 's/^- Version: *//p' "$readme" 2>/dev/null | head -n1)"
old_count="$( [ -f "$json" ] && count "$json" || echo 0)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "crawler-user-agents@$version" >/dev/null && tar xzf crawler-user-agents-*.tgz)

new_version="$(node -p 'require(process.argv[1]).version' "$tmp/package/package.json")"
new_count="$(count "$tmp/package/crawler-user-agents.json")"
[ -f "$tmp/package/LICENSE" ] || { echo "refresh.sh: the package has no LICENSE" >&2; exit 1; }

cp "$tmp/package/crawler-user-agents.json" "$json"
cp "$tmp/package/LICENSE" "$licence"
sed -i "s/^- Version: .*/- Version: $new_version/" "$readme"

echo "crawler-user-agents: ${old_version:-none} ($old_count patterns) -> $new_version ($new_count patterns)"
echo "now run the bots tests (cargo test bots) and review any new false positive"
