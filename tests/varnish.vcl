vcl 4.1;

# The VCL the Varnish tests run (tests/varnish_server.py fills in the backend port), and the
# one isr.cdn.VarnishPurger expects: PURGE with "xkey: tag1 tag2" removes the objects
# carrying any of the tags (xkey vmod, varnish-modules); "xkey-softpurge: ..." marks them
# stale, served within their grace while refetched. Objects are indexed by their "xkey"
# response header, or by "Surrogate-Key" when the backend sends that one.

import xkey;

backend default {
    .host = "127.0.0.1";
    .port = "${BACKEND_PORT}";
}

acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (req.http.xkey-softpurge) {
            set req.http.n-gone = xkey.softpurge(req.http.xkey-softpurge);
        } elsif (req.http.xkey) {
            set req.http.n-gone = xkey.purge(req.http.xkey);
        } else {
            return (synth(400, "PURGE needs an xkey or xkey-softpurge header"));
        }
        return (synth(200, "Invalidated " + req.http.n-gone + " objects"));
    }
}

sub vcl_backend_response {
    if (!beresp.http.xkey && beresp.http.Surrogate-Key) {
        set beresp.http.xkey = beresp.http.Surrogate-Key;
    }
    set beresp.grace = 60s;
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    unset resp.http.xkey;
}
