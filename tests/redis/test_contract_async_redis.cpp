// The async contract over Redis: a backend on the test's io_context (all I/O there, pipelined),
// and a backend without an executor (the async API runs its blocking calls elsewhere).
#include "../contract/async_contract.hpp"
#include "redis_fixture.hpp"

namespace {

struct redis_executor_fixture {
    using backend_type = callguard::redis_backend;
    std::string prefix = test::unique_prefix("async-exec");
    backend_type make_backend(boost::asio::any_io_executor ex) {
        return backend_type(ex, test::shared_redis().url(), prefix);
    }
};

struct redis_blocking_fixture {
    using backend_type = callguard::redis_backend;
    std::string prefix = test::unique_prefix("async-blocking");
    backend_type make_backend(boost::asio::any_io_executor) { return backend_type(test::shared_redis().url(), prefix); }
};

} // namespace

CALLGUARD_ASYNC_CONTRACT(redis_executor_fixture);
CALLGUARD_ASYNC_CONTRACT(redis_blocking_fixture);
