# legate in a FROM scratch image: the compiled executable, the shared
# libraries it links against, and the default routes. No shell, no package
# manager.
#
#   docker build -t legate .
#   docker run --network host -v "$PWD/routes:/etc/legate/routes:ro" legate
#
# The stage named "build" only has to produce /rootfs; tests replace it with a
# local folder (podman build --target runtime --build-context build=DIR).

ARG DENO_VERSION=2.9.6

# Fully qualified: podman (and other runtimes without a default registry)
# refuses short image names.
FROM docker.io/denoland/deno:debian-${DENO_VERSION} AS build
WORKDIR /src
COPY deno.json deno.lock main.ts mod.ts ./
COPY src ./src
COPY scripts ./scripts
COPY routes ./routes
RUN deno task compile --output /out/legate
# /rootfs: the executable, every library ldd names (with the dynamic loader),
# the default routes, and an empty /tmp.
RUN mkdir -p /rootfs/etc/legate /rootfs/tmp \
 && cp /out/legate /rootfs/legate \
 && cp -r routes /rootfs/etc/legate/routes \
 && ldd /out/legate | grep -o '/[^ ]*' | sort -u | xargs -I{} cp --parents -L {} /rootfs/ \
 && chmod 1777 /rootfs/tmp

FROM scratch AS runtime
COPY --from=build /rootfs/ /
ENV LEGATE_ROUTES=/etc/legate/routes
# A numeric non-root user: scratch has no /etc/passwd.
USER 65532:65532
# The admin listener (loopback unless --admin and --admin-allow-remote say otherwise).
EXPOSE 9901
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=4s CMD ["/legate", "healthcheck"]
ENTRYPOINT ["/legate"]
CMD ["serve"]
