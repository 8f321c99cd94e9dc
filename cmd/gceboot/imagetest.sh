#!/bin/sh
# imagetest.sh builds the gceboot image from cmd/gceboot/Dockerfile and
# runs bigpi on machines that boot it, through the Compute Engine emulator:
# each instance's container is the image, run by Docker on this host.
#
#   cmd/gceboot/imagetest.sh
#
# Where the base images can be pulled, set GO_IMAGE and RUNTIME_IMAGE to
# them (see the Dockerfile). Otherwise (no registry, as on the project's
# build machines) it makes stand-ins from this host: a Go image from this
# Go toolchain and a static busybox, and a distroless-like runtime image
# with this host's C library, CA certificates and the nonroot user.
#
# It needs a running Docker daemon, Go, and for the stand-ins
# /bin/busybox (Debian's busybox-static) and ldd.
set -eu

cd "$(dirname "$0")/../.."
fail() { echo "imagetest: $*" >&2; exit 1; }
docker info >/dev/null 2>&1 || fail "no Docker daemon answers: start dockerd (Debian: apt-get install docker.io; dockerd &)"

work=$(mktemp -d)
emulator_pid=
cleanup() {
	[ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null || true
	ids=$(docker ps -q --filter label=gcefleet-imagetest)
	[ -n "$ids" ] && docker kill $ids >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "==> building bigpi and gcefleet on this host"
go build -o "$work/bigpi" ./examples/bigpi
go build -o "$work/gcefleet" ./cmd/gcefleet

if [ -z "${GO_IMAGE:-}" ] && docker image inspect "gcefleet-imagetest/go:$(go env GOVERSION)" >/dev/null 2>&1; then
	GO_IMAGE="gcefleet-imagetest/go:$(go env GOVERSION)" # made by an earlier run
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
	echo "==> making a stand-in runtime image with this host's C library"
	root="$work/runtime-root"
	mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
	chmod 1777 "$root/tmp"
	cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
	printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
	chown 65532:65532 "$root/home/nonroot"
	# The C library as the driver's binary uses it: its loader and libraries.
	for lib in $(ldd "$work/bigpi" | grep -o '/[^ ]*'); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
	tar -C "$root" -c . | docker import - gcefleet-imagetest/runtime:local >/dev/null
	RUNTIME_IMAGE=gcefleet-imagetest/runtime:local
fi

echo "==> building the gceboot image on $RUNTIME_IMAGE"
docker build -q --network host -f cmd/gceboot/Dockerfile \
	--build-arg GO_IMAGE="$GO_IMAGE" --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" \
	-t gcefleet-imagetest/gceboot:local . >/dev/null
user=$(docker image inspect -f '{{.Config.User}}' gcefleet-imagetest/gceboot:local)
[ "$user" = "nonroot:nonroot" ] || fail "the image runs as '$user', want nonroot:nonroot"
size=$(docker image inspect -f '{{.Size}}' gcefleet-imagetest/gceboot:local)
echo "    runs as $user; $((size / 1000000)) MB"

echo "==> bigpi on 2 machines whose containers run the image"
# The emulator runs this in place of the container: Docker runs the image
# on the host's network, with the instance's metadata server.
cat >"$work/container" <<'EOF'
#!/bin/sh
exec docker run --rm --network host --label gcefleet-imagetest \
	-e GCE_METADATA_HOST -e GCE_METADATA_IP gcefleet-imagetest/gceboot:local "$@"
EOF
chmod +x "$work/container"
"$work/gcefleet" emulator --listen 127.0.0.1:0 --image gcr.io/imagetest/gceboot="$work/container" >"$work/emulator.out" 2>&1 &
emulator_pid=$!
for _ in $(seq 100); do
	url=$(head -1 "$work/emulator.out" 2>/dev/null | grep -o 'http://[0-9.:]*' || true)
	[ -n "$url" ] && break
	sleep 0.1
done
[ -n "$url" ] || fail "the emulator did not start: $(cat "$work/emulator.out")"
"$work/bigpi" -system=gce -nmach=2 -samples=2e8 -start-timeout=2m \
	-gce.endpoint="$url" -gce.project=imagetest-project -gce.zones=us-central1-a \
	-gce.image=gcr.io/imagetest/gceboot:v1 >"$work/bigpi.out" 2>"$work/bigpi.err" ||
	fail "bigpi on the image failed: $(cat "$work/bigpi.err")"
cat "$work/bigpi.out"
echo "imagetest: ok"
