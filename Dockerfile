# One image for both subcommands: `sluice manager` and `sluice runner`.
# The runner executes Python tasks with the image's python3 (Debian's 3.11, standard library
# only), found in PATH; `sluice runner --python` names another interpreter. The image runs as
# an unprivileged user, which is what keeps the Python worker, running as the same user, out
# of the runner's /proc files (runner/transform/python).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sluice .

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin sluice
COPY --from=build /out/sluice /usr/local/bin/sluice
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sluice"]
