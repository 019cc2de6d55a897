#!/usr/bin/env bash
# Lint this br2-external tree with Buildroot's own utils/check-package, then
# prove the linter is live: a copy of the tree with one known fault per file
# kind must fail.
#
# Buildroot's linter comes from $BUILDROOT (a checkout), else from the copy
# of its utils/ in ../shared/buildroot-check-package/ beside the repository.
# Needs python3 with the 'magic' and 'flake8' modules (Debian: apt-get
# install python3-magic flake8) and shellcheck.
set -euo pipefail

tree=$(cd "$(dirname "$0")" && pwd)
shared=$(cd "$tree/../../.." && pwd)/shared/buildroot-check-package

die() {
	printf '\n*** check-package.sh: %s\n\n' "$*" >&2
	exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -n "${BUILDROOT:-}" ]; then
	[ -x "$BUILDROOT/utils/check-package" ] ||
		die "BUILDROOT=$BUILDROOT has no utils/check-package"
	br=$BUILDROOT
	origin="$BUILDROOT"
elif [ -f "$shared/utils/check-package" ]; then
	br=$(cd "$shared" && pwd)
	origin="$br, Buildroot $(cut -c1-12 "$br/COMMIT" 2>/dev/null || echo '(commit unknown)')"
else
	die "no Buildroot linter: set BUILDROOT to a Buildroot checkout" \
		"(git clone https://gitlab.com/buildroot.org/buildroot.git)" \
		"or put its utils/ copy in $shared"
fi

# check-package runs flake8 in-process and identifies shell scripts with
# libmagic: pick a python3 that has both, as a missing one breaks the run.
py=
for candidate in python3 /usr/bin/python3; do
	if "$candidate" -c 'import magic, flake8' >/dev/null 2>&1; then
		py=$candidate
		break
	fi
done
[ -n "$py" ] || die "no python3 with the magic and flake8 modules" \
	"(Debian: apt-get install python3-magic flake8)"
command -v shellcheck >/dev/null || die "shellcheck is missing (apt-get install shellcheck)"

check_package() {
	"$py" "$br/utils/check-package" -b "$@"
}

# Every file of the tree, except the few that check-package has no checker
# for by design: external.desc, README.md, and external.mk (skipped in a
# br2-external tree).
list_files() {
	(cd "$1" && find . -type f ! -name '*.pyc' | sed 's|^\./||' | LC_ALL=C sort)
}
unchecked='^(external\.desc|external\.mk|README\.md)$'

cd "$tree"
mapfile -t files < <(list_files .)

# A file check-package does not recognise is skipped without a word; make
# sure each one we expect to be linted really is.
plan=$(check_package --dry-run --quiet "${files[@]}")
for f in "${files[@]}"; do
	[[ $f =~ $unchecked ]] && continue
	grep -q "^$f: would run:" <<<"$plan" ||
		die "check-package has no checker for $f; rename it or list it as unchecked"
done

echo "check-package ($origin) on ${#files[@]} files of $tree"
check_package -v "${files[@]}" || die "check-package found problems in board/buildroot (above)"

# The canary: break a copy of the tree in one known way per checker family
# and require a warning naming each broken file.
canary=$work/canary
cp -a "$tree" "$canary"
cd "$canary"
printf 'RKLLMD_LICENSE_FILES += LICENSE \n' >>package/rkllmd/rkllmd.mk
printf 'sha256  1234  LICENSE\n' >>package/rkllm-runtime/rkllm-runtime.hash
printf 'config BR2_PACKAGE_RKLLMD_CANARY\n    bool "canary"\n' >>package/rkllmd/Config.in
printf 'echo \x241\n' >>check-package.sh # echo $1: unquoted
set +e
report=$(check_package "${files[@]}" 2>&1)
status=$?
set -e
[ "$status" -ne 0 ] || die "the canary: check-package passed a tree with known faults"
for f in package/rkllmd/rkllmd.mk package/rkllm-runtime/rkllm-runtime.hash \
	package/rkllmd/Config.in check-package.sh; do
	grep -q "^$f:" <<<"$report" ||
		die "the canary: check-package did not report the fault put in $f:"$'\n'"$report"
done
echo "canary: check-package reports the 4 faults put in a copy of the tree"
