// The blocking contract over a Redis backend that runs its I/O on an application's io_context:
// every blocking call here comes from a thread that does not run it, and waits for it.
#include "../contract/limiter_contract.hpp"
#include "../support/io_thread.hpp"
#include "redis_fixture.hpp"

namespace {

struct redis_on_executor_fixture {
    using backend_type = callguard::redis_backend;
    static test::io_thread& io() {
        static test::io_thread t(2);
        return t;
    }
    std::string prefix = test::unique_prefix("contract-exec");
    backend_type make_backend() { return backend_type(io().executor(), test::shared_redis().url(), prefix); }
};

} // namespace

CALLGUARD_LIMITER_CONTRACT(redis_on_executor_fixture);
