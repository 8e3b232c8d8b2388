#pragma once

#include "../errors.hpp"

#include <string>

namespace callguard {

/// Everything the Redis backend throws is a `backend_error`, so the limiter's fail mode applies.
class redis_error : public backend_error {
public:
    using backend_error::backend_error;
};

/// The connection failed: refused, reset, closed, or a broken reply. The connection is dropped.
class redis_io_error : public redis_error {
public:
    using redis_error::redis_error;
};

/// Connect or command timed out. After a command timeout the write may have happened.
class redis_timeout_error : public redis_io_error {
public:
    using redis_io_error::redis_io_error;
};

/// Redis answered with an error (-ERR, -NOAUTH, -READONLY, -OOM, ...).
class redis_reply_error : public redis_error {
public:
    using redis_error::redis_error;
};

/// The circuit breaker is open: Redis failed recently, and this call did not touch the network.
class redis_unavailable : public redis_error {
public:
    using redis_error::redis_error;
};

/// Every pooled connection stayed busy longer than the timeout (Redis itself may be fine).
class redis_pool_timeout : public redis_error {
public:
    using redis_error::redis_error;
};

/// A blocking call on a thread that runs the backend's own executor: it would wait for itself,
/// so it is refused (the fail mode decides that call; Redis itself may be fine). Use the async
/// API (`callguard/async.hpp`) on that thread.
class redis_wrong_thread : public redis_error {
public:
    using redis_error::redis_error;
};

} // namespace callguard
