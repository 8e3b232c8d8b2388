// The limiter contract over TLS (rediss://), against a redis-server with TLS and certificates
// made by openssl at test time.
#include "../contract/limiter_contract.hpp"
#include "../support/tls_certs.hpp"
#include "redis_fixture.hpp"

namespace {

struct tls_fixture {
    using backend_type = callguard::redis_backend;

    static const test::tls_certs& certs() {
        static test::tls_certs c;
        return c;
    }
    static test::tls_redis& server() {
        static test::tls_redis s(certs());
        return s;
    }

    std::string prefix = test::unique_prefix("contract-tls");
    backend_type make_backend() {
        auto o = callguard::redis_options::from_url(server().url("localhost"));
        o.key_prefix = prefix;
        o.tls.ca_file = certs().pem("ca");
        o.connect_timeout = o.command_timeout = std::chrono::milliseconds(2000);
        return backend_type(std::move(o));
    }
};

} // namespace

CALLGUARD_LIMITER_CONTRACT(tls_fixture);
