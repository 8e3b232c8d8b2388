// The async contract over the memory backend (it never blocks: called at initiation, the
// handler posted).
#include "contract/async_contract.hpp"

namespace {
struct memory_async_fixture {
    using backend_type = callguard::memory_backend;
    backend_type backend; // one storage per fixture: copies share it
    backend_type make_backend(boost::asio::any_io_executor) { return backend; }
};
} // namespace

CALLGUARD_ASYNC_CONTRACT(memory_async_fixture);
