#!/usr/bin/env bash
# Re-fetch the vendored API-docs assets (Swagger UI and ReDoc) into src/banking/rest/static/.
#
# The service serves /docs and /redoc from these files, never from a CDN: the pages work
# offline and under Content-Security-Policy: default-src 'self'. The files are committed, so
# neither installing nor testing the project needs this script or the npm registry; run it
# only to change a version (edit the pins below, run it, review the diff, run
# tests/rest/test_docs_browser.py).
#
# Each package is fetched with `npm pack` at the pinned version and its tarball checked
# against the pinned integrity (the registry's dist.integrity, sha512) before anything is
# copied. Only the files the pages load, and their licences, are kept; NOTICE.md is
# rewritten with the versions and the sha256 of every vendored file.
#
# Usage: scripts/fetch-docs-assets.sh [--check]
#   --check  fetch into a temporary folder and fail if the committed files differ
set -euo pipefail

SWAGGER_UI_VERSION=5.34.1
SWAGGER_UI_INTEGRITY=sha512-VSr8fXfI93obYaQicLJbLUKGRxDojj/SfRJDDLCioGTUBj4BK/Nj4eE9jCeCAnJxVLi7iS+08PbiZLyrQKBkJQ==
REDOC_VERSION=2.5.4
REDOC_INTEGRITY=sha512-M6jWhG1qoBnH6TFmzJnstyCZ87HmOY/UzDm78mHiYihEdlV/YcS9ogOo1NlElnJMeLsyxHFe2yFc4sNjHTrABQ==

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)
STATIC_DIR=$REPO_ROOT/src/banking/rest/static

log() { printf 'fetch-docs-assets: %s\n' "$*" >&2; }

command -v npm >/dev/null 2>&1 || { log "npm not found (Debian: apt-get install npm)"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fetch NAME VERSION INTEGRITY: the package's files under $work/NAME/package/
fetch() {
    local name=$1 version=$2 integrity=$3 tarball actual
    mkdir -p "$work/$name"
    tarball=$(cd "$work/$name" && npm pack --silent "$name@$version")
    actual="sha512-$(openssl dgst -sha512 -binary "$work/$name/$tarball" | base64 -w0)"
    if [[ $actual != "$integrity" ]]; then
        log "$name@$version: integrity $actual, expected $integrity"
        exit 1
    fi
    tar -xzf "$work/$name/$tarball" -C "$work/$name"
    log "$name@$version fetched, integrity checked"
}

fetch swagger-ui-dist "$SWAGGER_UI_VERSION" "$SWAGGER_UI_INTEGRITY"
fetch redoc "$REDOC_VERSION" "$REDOC_INTEGRITY"

out=$work/out
mkdir -p "$out/swagger-ui" "$out/redoc"
swagger=$work/swagger-ui-dist/package
for file in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE; do
    cp "$swagger/$file" "$out/swagger-ui/$file"
done
redoc=$work/redoc/package
for file in bundles/redoc.standalone.js bundles/redoc.standalone.js.LICENSE.txt LICENSE; do
    cp "$redoc/$file" "$out/redoc/$(basename "$file")"
done
# The files may end with a source-map comment; the maps are not vendored, so drop it (a
# browser with developer tools open would otherwise request a file that is not there).
for file in "$out/swagger-ui/swagger-ui-bundle.js" "$out/swagger-ui/swagger-ui.css" \
    "$out/redoc/redoc.standalone.js"; do
    sed -i -E -e '$ s@^(//# sourceMappingURL=.*|/\*# sourceMappingURL=.*\*/)$@@' "$file"
done

# swagger-ui.css inlines its icons (select arrows, check marks, model toggles, the copy
# button) as data: URLs, which the policy blocks like any image not from 'self'. Each one is
# written to an icon-<sha256 prefix>.svg file beside the CSS, and the CSS points at that file.
python3 - "$out/swagger-ui/swagger-ui.css" <<'PY'
import hashlib
import re
import sys
import urllib.parse
from pathlib import Path

css_path = Path(sys.argv[1])
inline_svg = re.compile(r'url\("data:image/svg\+xml;charset=utf-8,((?:[^"\\]|\\.)*)"\)')


def to_file(match: re.Match[str]) -> str:
    svg = urllib.parse.unquote(re.sub(r"\\(.)", r"\1", match.group(1)))
    name = f"icon-{hashlib.sha256(svg.encode()).hexdigest()[:12]}.svg"
    (css_path.parent / name).write_text(svg + "\n")
    return f'url("{name}")'


css, count = inline_svg.subn(to_file, css_path.read_text())
if count == 0 or "data:image/svg" in css:
    sys.exit(f"{css_path.name}: expected inline SVG icons to move, moved {count}")
css_path.write_text(css)
PY

{
    cat <<EOF
# Vendored API-docs assets

Written by \`scripts/fetch-docs-assets.sh\`; do not edit by hand. The service serves these
files itself at \`/docs-assets/static/\` for \`/docs\` (Swagger UI) and \`/redoc\` (ReDoc), so
the pages need no CDN and work under \`Content-Security-Policy: default-src 'self'\`. The
start-up code of each page is ours: \`docs-init.js\` and \`redoc-init.js\` beside this file.

| folder | npm package | version | licence | upstream |
| --- | --- | --- | --- | --- |
| \`swagger-ui/\` | \`swagger-ui-dist\` | $SWAGGER_UI_VERSION | Apache-2.0 (\`swagger-ui/LICENSE\`, \`swagger-ui/NOTICE\`) | https://github.com/swagger-api/swagger-ui |
| \`redoc/\` | \`redoc\` (\`bundles/redoc.standalone.js\`) | $REDOC_VERSION | MIT (\`redoc/LICENSE\`) | https://github.com/Redocly/redoc |

The licences of the libraries bundled inside each file are in the \`*.LICENSE.txt\` file next
to it. Changes made to the upstream files: the trailing \`sourceMappingURL\` comments are
removed (the source maps are not vendored), and the SVG icons that \`swagger-ui.css\` inlines
as \`data:\` URLs, which the policy blocks, are moved to the \`swagger-ui/icon-*.svg\` files
that the CSS now points at.

Integrity of the npm tarballs (checked before copying):

- swagger-ui-dist@$SWAGGER_UI_VERSION: \`$SWAGGER_UI_INTEGRITY\`
- redoc@$REDOC_VERSION: \`$REDOC_INTEGRITY\`

sha256 of the vendored files:

\`\`\`
EOF
    (cd "$out" && sha256sum swagger-ui/* redoc/* | sort -k2)
    echo '```'
} >"$out/NOTICE.md"

if [[ ${1-} == --check ]]; then
    status=0
    for path in NOTICE.md swagger-ui redoc; do
        diff -r -q "$out/$path" "$STATIC_DIR/$path" || status=1
    done
    if [[ $status -ne 0 ]]; then
        log "the committed assets differ from the pinned versions: run scripts/fetch-docs-assets.sh"
        exit 1
    fi
    log "the committed assets match swagger-ui-dist@$SWAGGER_UI_VERSION and redoc@$REDOC_VERSION"
    exit 0
fi

rm -rf "$STATIC_DIR/swagger-ui" "$STATIC_DIR/redoc"
cp -r "$out/swagger-ui" "$out/redoc" "$out/NOTICE.md" "$STATIC_DIR/"
log "wrote $STATIC_DIR/{swagger-ui,redoc,NOTICE.md}"
