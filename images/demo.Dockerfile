# mycel-demo: the demo shop's services, one static binary (its role is its
# first argument; `mycel-demo fetch URL` is the HTTP client tests run with
# kubectl exec, as the image has no shell or curl). Built by
# images/build.sh, context target/image/context/demo.
FROM scratch
COPY mycel-demo /usr/local/bin/mycel-demo
ENV PATH=/usr/local/bin
# Non-root, and not the proxy's 1337: an app running as 1337 would bypass
# its sidecar's capture.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mycel-demo"]
