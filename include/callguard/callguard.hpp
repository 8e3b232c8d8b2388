#pragma once

/// Umbrella header: the limiter, its configuration, the in-memory backend, status and metrics,
/// and the waiting room's types.
/// The Redis backend (needs hiredis) is `<callguard/backends/redis.hpp>`; TwiML helpers are
/// `<callguard/twilio/twiml.hpp>`.

#include "acquire_result.hpp"
#include "backend.hpp"
#include "backends/memory.hpp"
#include "capacity_limiter.hpp"
#include "config.hpp"
#include "errors.hpp"
#include "events.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "reinstate_result.hpp"
#include "slot_guard.hpp"
#include "status.hpp"
#include "validation.hpp"
#include "version.hpp"
#include "wait_metrics.hpp"
#include "wait_result.hpp"
#include "waiting_room.hpp"
