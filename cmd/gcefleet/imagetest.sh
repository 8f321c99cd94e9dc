#!/bin/sh
# imagetest.sh builds the gcefleet image from cmd/gcefleet/Dockerfile and
# serves from it: `gcefleet serve` with SQLite on a volume, as the
# unprivileged user, answering the API with tokens read from files.
#
#   cmd/gcefleet/imagetest.sh
#
# Where the base images can be pulled, set GO_IMAGE and RUNTIME_IMAGE to
# them (see the Dockerfile). Otherwise (no registry, as on the project's
# build machines) it makes stand-ins from this host, as
# cmd/gceboot/imagetest.sh does: a Go image from this Go toolchain and a
# static busybox, and a distroless-static-like runtime image with CA
# certificates and the nonroot user.
#
# It needs a running Docker daemon, Go, curl, and for the stand-ins
# /bin/busybox (Debian's busybox-static).
set -eu

cd "$(dirname "$0")/../.."
fail() { echo "imagetest: $*" >&2; exit 1; }
docker info >/dev/null 2>&1 || fail "no Docker daemon answers: start dockerd (Debian: apt-get install docker.io; dockerd &)"
command -v curl >/dev/null || fail "no curl (Debian: apt-get install curl)"

work=$(mktemp -d)
tag=gcefleet-imagetest-$$
cleanup() {
	docker rm -f "$tag" >/dev/null 2>&1 || true
	docker volume rm "$tag" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

if [ -z "${GO_IMAGE:-}" ] && docker image inspect "gcefleet-imagetest/go:$(go env GOVERSION)" >/dev/null 2>&1; then
	GO_IMAGE="gcefleet-imagetest/go:$(go env GOVERSION)" # made by an earlier run (of this or gceboot's test)
fi
if [ -z "${GO_IMAGE:-}" ]; then
	echo "==> making a stand-in Go image from $(go env GOROOT)"
	[ -x /bin/busybox ] || fail "no /bin/busybox for the stand-in Go image (Debian: apt-get install busybox-static), or set GO_IMAGE"
	root="$work/go-root"
	mkdir -p "$root/bin" "$root/usr/local" "$root/etc/ssl/certs" "$root/tmp" "$root/root"
	cp /bin/busybox "$root/bin/busybox"
	for t in sh mkdir rm cp ls cat env; do ln -s busybox "$root/bin/$t"; done
	cp -a "$(go env GOROOT)" "$root/usr/local/go"
	cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
	tar -C "$root" -c . | docker import \
		--change 'ENV PATH=/usr/local/go/bin:/bin HOME=/root GOFLAGS=-buildvcs=false CGO_ENABLED=0' \
		- "gcefleet-imagetest/go:$(go env GOVERSION)" >/dev/null
	GO_IMAGE="gcefleet-imagetest/go:$(go env GOVERSION)"
fi

if [ -z "${RUNTIME_IMAGE:-}" ]; then
	echo "==> making a stand-in static runtime image"
	root="$work/runtime-root"
	mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
	chmod 1777 "$root/tmp"
	cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
	printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
	chown 65532:65532 "$root/home/nonroot"
	tar -C "$root" -c . | docker import - gcefleet-imagetest/static:local >/dev/null
	RUNTIME_IMAGE=gcefleet-imagetest/static:local
fi

echo "==> building the gcefleet image on $RUNTIME_IMAGE"
docker build -q --network host -f cmd/gcefleet/Dockerfile \
	--build-arg GO_IMAGE="$GO_IMAGE" --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" \
	-t gcefleet-imagetest/gcefleet:local . >/dev/null
user=$(docker image inspect -f '{{.Config.User}}' gcefleet-imagetest/gcefleet:local)
[ "$user" = "nonroot:nonroot" ] || fail "the image runs as '$user', want nonroot:nonroot"
size=$(docker image inspect -f '{{.Size}}' gcefleet-imagetest/gcefleet:local)
echo "    runs as $user; $((size / 1000000)) MB"

echo "==> gcefleet serve in the image, SQLite on a volume"
# The tokens are files readable by the image's user alone, as a secret
# store would mount them; the config names them, never their contents.
etc="$work/etc"
mkdir -p "$etc"
for name in admin gce alice; do
	head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$etc/$name.token"
done
chown 65532:65532 "$etc"/*.token
chmod 0400 "$etc"/*.token
cat >"$etc/gcefleet.yaml" <<'YAML'
listen: 0.0.0.0:8790
database: /var/lib/gcefleet/gcefleet.db
tokens:
  - {name: ops,   role: admin,   token_file: /etc/gcefleet/admin.token}
  - {name: gce,   role: backend, token_file: /etc/gcefleet/gce.token}
  - {name: alice, role: client,  token_file: /etc/gcefleet/alice.token}
YAML
chmod 0644 "$etc/gcefleet.yaml"
docker volume create "$tag" >/dev/null
docker run -d --name "$tag" --label gcefleet-imagetest --read-only --cap-drop ALL --security-opt no-new-privileges \
	-v "$etc:/etc/gcefleet:ro" -v "$tag:/var/lib/gcefleet" -p 127.0.0.1::8790 \
	gcefleet-imagetest/gcefleet:local >/dev/null

# waitok URL: waits (at most 30s) until GET URL answers 200.
waitok() {
	for _ in $(seq 300); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		[ "$(docker inspect -f '{{.State.Running}}' "$tag")" = true ] || fail "serve exited: $(docker logs "$tag" 2>&1 | tail -20)"
		sleep 0.1
	done
	fail "$1 did not answer in 30s: $(docker logs "$tag" 2>&1 | tail -20)"
}
url="http://$(docker port "$tag" 8790/tcp | head -1)"
waitok "$url/v1/openapi.yaml"
curl -fsS "$url/v1/openapi.yaml" | grep '^openapi: 3' >/dev/null || fail "/v1/openapi.yaml is not an OpenAPI document"
uid=$(docker top "$tag" -o pid,uid,comm | awk '$3 == "gcefleet" {print $2}')
[ "$uid" = 65532 ] || fail "serve runs as uid '$uid', want 65532 (nonroot)"
echo "    $url/v1/openapi.yaml answers; serve runs as uid $uid"

# api TOKEN_FILE METHOD PATH [BODY]: the API's answer, with the token of
# TOKEN_FILE.
api() {
	curl -sS -X "$2" -H "Authorization: Bearer $(cat "$etc/$1")" -H 'Content-Type: application/json' \
		${4:+--data "$4"} "$url$3"
}
code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST --data '{}' "$url/v1/leases")
[ "$code" = 401 ] || fail "a lease request without a token answered $code, want 401"
out=$(api gce.token POST /v1/machines '{"hostname": "imagetest-1", "dimensions": {"os": ["linux"]}}')
echo "$out" | grep -q '"hostname": *"imagetest-1"' || fail "the backend's machine was not added: $out"
out=$(api alice.token POST /v1/leases '{"request_id": "imagetest-lease-1", "dimensions": {"os": ["linux"]}, "term": {"indefinite": true}}')
echo "$out" | grep -q '"state": *"FULFILLED"' || fail "the lease request was not fulfilled: $out"
lease=$(echo "$out" | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' | head -1)
[ -n "$lease" ] || fail "no lease id in $out"
echo "    lease $lease fulfilled with imagetest-1"

echo "==> the lease outlives a restart (the volume holds the database)"
docker restart "$tag" >/dev/null
url="http://$(docker port "$tag" 8790/tcp | head -1)"
waitok "$url/v1/openapi.yaml"
out=$(api alice.token GET "/v1/leases/$lease")
echo "$out" | grep -q '"state": *"FULFILLED"' || fail "after a restart, lease $lease reads: $out"
echo "imagetest: ok"
