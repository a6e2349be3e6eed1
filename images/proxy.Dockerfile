# mycel-proxy: the sidecar, and the init container (`mycel-proxy init`),
# one image for both as the injector (inject/src/containers.rs) uses it.
# Built by images/build.sh, whose context is target/image/context/proxy:
# `root/` is iptables (nf_tables backend) and its libraries unpacked from
# Debian packages; the proxy itself is static.
#
# No CA certificates: the proxy trusts only the mesh's roots, given by file.
FROM scratch
COPY root/ /
COPY mycel-proxy /usr/local/bin/mycel-proxy
# The injector's command is the bare name `mycel-proxy`; `init` looks up
# iptables-nft-save and -restore in PATH.
ENV PATH=/usr/local/bin:/usr/sbin
# The sidecar's UID: the capture rules let traffic of UID 1337 through, so
# the proxy's own connections are not captured again. The init container
# overrides it with runAsUser 0 and NET_ADMIN/NET_RAW.
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/mycel-proxy"]
