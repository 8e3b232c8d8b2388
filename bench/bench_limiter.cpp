// Limiter throughput and latency, one body per operation, registered once per backend:
//   acquire+release pairs, acquire at capacity (rejections), status, and pairs while N slots
//   are held (does the cost stay flat as the set grows?).
// The memory backend is the baseline. With CALLGUARD_BENCH_REDIS and REDIS_URL set, every body
// also runs over the Redis backend against that server (bench/compare.sh starts one), and
// `bench_limiter --server-time` reports the server's own time per operation instead.
#include <callguard/callguard.hpp>
#ifdef CALLGUARD_BENCH_REDIS
#include <callguard/async.hpp>
#include <callguard/backends/redis.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#endif

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#ifdef CALLGUARD_BENCH_REDIS
#include <hiredis/hiredis.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

callguard::limiter_config bench_config(std::int64_t cap) {
    callguard::limiter_config c;
    c.max_active_calls = cap;
    c.log_level = callguard::log_level::error;
    return c;
}

std::string call_id(int thread, std::int64_t i) { return fmt::format("CA{:08x}{:024x}", thread, i); }

/// 4096 Twilio-shaped ids for one thread, made before the timed loop.
std::vector<std::string> call_ids(int thread) {
    std::vector<std::string> ids;
    for (std::int64_t i = 0; i < 4096; ++i) ids.push_back(call_id(thread, i));
    return ids;
}

/// Backends by name, each made fresh for one benchmark run.
struct memory_maker {
    static constexpr const char* name = "memory";
    static constexpr std::size_t sample_mask = 63; // time one acquire in 64
    static callguard::memory_backend make(std::string_view) { return {}; }
};

#ifdef CALLGUARD_BENCH_REDIS
/// The default multiplexed mode ("redis"), and the pool ("redis_pooled") with one connection
/// per caller, like redis-benchmark's -c.
template <callguard::redis_connection_mode Mode>
struct redis_maker {
    static constexpr const char* name =
        Mode == callguard::redis_connection_mode::multiplexed ? "redis" : "redis_pooled";
    static constexpr std::size_t sample_mask = 0; // a round trip dwarfs the clock: time them all
    static callguard::redis_backend make(std::string_view run) {
        auto o = callguard::redis_options::from_env();
        o.key_prefix = fmt::format("bench-{}", run);
        o.connection_mode = Mode;
        o.pool_size = 64;
        if (const char* n = std::getenv("CALLGUARD_BENCH_SOCKETS")) o.multiplexed_connections = std::atoi(n);
        o.command_timeout = o.connect_timeout = std::chrono::milliseconds(2000);
        return callguard::redis_backend(std::move(o));
    }
    /// Fills the set with `n` live slots in one server-side loop (acquiring a million slots one
    /// round trip at a time would take most of a minute).
    static void prefill(std::string_view run, std::int64_t n) {
        const auto o = callguard::redis_options::from_env();
        const timeval long_wait{120, 0}; // one script adds them all
        redisContext* c = o.unix_socket.empty() ? redisConnectWithTimeout(o.host.c_str(), o.port, long_wait)
                                                : redisConnectUnixWithTimeout(o.unix_socket.c_str(), long_wait);
        if (!c || c->err) throw std::runtime_error("prefill: cannot connect to Redis");
        redisSetTimeout(c, long_wait);
        const auto key = fmt::format("{{bench-{}}}:active", run);
        const auto count = std::to_string(n);
        const char* argv[] = {"EVAL",
                              "local t = redis.call('TIME'); local exp = tonumber(t[1]) * 1000 + 7200000;"
                              "for i = 1, tonumber(ARGV[1]) do redis.call('ZADD', KEYS[1], exp, 'held-' .. i) end;"
                              "redis.call('PEXPIRE', KEYS[1], 7200000); return 1",
                              "1", key.c_str(), count.c_str()};
        if (auto* r = redisCommandArgv(c, 5, argv, nullptr)) freeReplyObject(r);
        redisFree(c);
    }
};
#endif

/// One limiter shared by all threads of a run; thread 0 builds it before the timed loop
/// (Google Benchmark starts every thread's loop together, after that).
template <class Maker>
struct shared {
    using limiter = callguard::capacity_limiter<decltype(Maker::make(""))>;
    static inline std::unique_ptr<limiter> instance;
    static inline std::atomic<int> runs{0};

    static void reset(std::int64_t cap, std::int64_t held) {
        instance.reset();
        const auto run = std::to_string(runs++);
        instance = std::make_unique<limiter>(Maker::make(run), bench_config(cap),
                                             callguard::limiter_hooks{callguard::null_sink(), {}});
        if constexpr (requires { Maker::prefill(run, held); }) {
            if (held > 0) Maker::prefill(run, held);
        } else {
            for (std::int64_t i = 0; i < held; ++i) instance->acquire(call_id(-1, i));
        }
    }
};

/// Per-thread latency samples turned into p50/p99 counters (microseconds).
class latencies {
public:
    explicit latencies(std::size_t reserve) { samples_.reserve(reserve); }
    void add(std::chrono::steady_clock::duration d) {
        if (samples_.size() < samples_.capacity()) samples_.push_back(d.count());
    }
    void report(benchmark::State& state, const char* what) {
        if (samples_.empty()) return;
        std::sort(samples_.begin(), samples_.end());
        auto at = [&](double q) {
            auto idx = static_cast<std::size_t>(q * static_cast<double>(samples_.size() - 1));
            return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::duration(samples_[idx])).count();
        };
        state.counters[fmt::format("{}_p50_us", what)] = benchmark::Counter(at(0.50), benchmark::Counter::kAvgThreads);
        state.counters[fmt::format("{}_p99_us", what)] = benchmark::Counter(at(0.99), benchmark::Counter::kAvgThreads);
    }

private:
    std::vector<std::chrono::steady_clock::rep> samples_;
};

template <class Maker>
void acquire_release(benchmark::State& state) {
    const std::int64_t held = state.range(0);
    if (state.thread_index() == 0) shared<Maker>::reset(held + 1'000'000, held);
    latencies lat(1 << 20);
    const auto ids = call_ids(state.thread_index());
    std::size_t i = 0;
    for (auto _ : state) {
        auto& l = *shared<Maker>::instance;
        const auto& id = ids[i++ & 4095];
        if (((i - 1) & Maker::sample_mask) == 0) { // sampled: clock reads would dominate a memory pair
            auto t0 = std::chrono::steady_clock::now();
            benchmark::DoNotOptimize(l.acquire(id));
            lat.add(std::chrono::steady_clock::now() - t0);
        } else {
            benchmark::DoNotOptimize(l.acquire(id));
        }
        benchmark::DoNotOptimize(l.release(id));
    }
    lat.report(state, "acquire");
    state.counters["pairs/s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                   benchmark::Counter::kIsRate);
}

template <class Maker>
void acquire_at_capacity(benchmark::State& state) {
    if (state.thread_index() == 0) shared<Maker>::reset(15, 15);
    const auto ids = call_ids(state.thread_index());
    std::size_t i = 0;
    for (auto _ : state) benchmark::DoNotOptimize(shared<Maker>::instance->acquire(ids[i++ & 4095]));
    state.counters["rejections/s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                        benchmark::Counter::kIsRate);
}

template <class Maker>
void status(benchmark::State& state) {
    if (state.thread_index() == 0) shared<Maker>::reset(15, 8);
    for (auto _ : state) benchmark::DoNotOptimize(shared<Maker>::instance->status());
    state.counters["status/s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                    benchmark::Counter::kIsRate);
}

template <class Maker>
void register_all(const std::vector<int>& threads, std::int64_t max_held) {
    auto reg = [&](const char* op, auto fn) {
        auto* b = benchmark::RegisterBenchmark(fmt::format("{}/{}", op, Maker::name).c_str(), fn);
        b->UseRealTime();
        for (int t : threads) b->Threads(t);
        return b;
    };
    reg("acquire_release", acquire_release<Maker>)->Arg(0);
    reg("acquire_at_capacity", acquire_at_capacity<Maker>);
    reg("status", status<Maker>);
    auto* held = benchmark::RegisterBenchmark(fmt::format("acquire_release_held/{}", Maker::name).c_str(),
                                              acquire_release<Maker>);
    held->UseRealTime()->Threads(1);
    for (std::int64_t n : {15LL, 1000LL, 100'000LL, 1'000'000LL})
        if (n <= max_held) held->Arg(n);
}

#ifdef CALLGUARD_BENCH_REDIS
/// `--server-time`: what each operation costs the server itself, from its INFO commandstats
/// (microseconds inside the command, the same measure for any client), with no tenant and with
/// a tenant that has a cap. Nothing else may use the server meanwhile.
namespace server_time {

/// A plain hiredis connection for CONFIG RESETSTAT and INFO, beside the backend under test.
class admin {
public:
    explicit admin(const callguard::redis_options& o) {
        const timeval tv{2, 0};
        ctx_ = o.unix_socket.empty() ? redisConnectWithTimeout(o.host.c_str(), o.port, tv)
                                     : redisConnectUnixWithTimeout(o.unix_socket.c_str(), tv);
        if (!ctx_ || ctx_->err) throw std::runtime_error("server-time: cannot connect to REDIS_URL");
    }
    ~admin() { redisFree(ctx_); }
    admin(const admin&) = delete;
    admin& operator=(const admin&) = delete;

    /// EVALSHA's calls and microseconds since the last reset.
    std::pair<double, double> evalsha() {
        const auto text = run("INFO commandstats");
        const auto at = text.find("cmdstat_evalsha:calls=");
        if (at == std::string::npos) return {0, 0};
        double calls = 0, usec = 0;
        std::sscanf(text.c_str() + at, "cmdstat_evalsha:calls=%lf,usec=%lf", &calls, &usec);
        return {calls, usec};
    }

private:
    std::string run(const char* command) {
        auto* r = static_cast<redisReply*>(redisCommand(ctx_, command));
        if (!r) throw std::runtime_error(fmt::format("server-time: {} failed", command));
        std::string text = r->type == REDIS_REPLY_STRING ? std::string(r->str, r->len) : std::string();
        freeReplyObject(r);
        return text;
    }
    redisContext* ctx_ = nullptr;
};

using limiter = callguard::capacity_limiter<callguard::redis_backend>;

std::unique_ptr<limiter> make_limiter(const std::string& run, bool with_tenant) {
    auto c = bench_config(1'000'000'000);
    if (with_tenant) c.tenant_limits["biz1"] = 1'000'000'000; // a tenant with a cap: its count is checked
    return std::make_unique<limiter>(
        redis_maker<callguard::redis_connection_mode::multiplexed>::make(run), c,
        callguard::limiter_hooks{callguard::null_sink(), {}});
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

/// While callers do pairs as fast as they can (after 300 ms to load the scripts and warm the
/// sockets): EVALSHA's microseconds per pair done (`pairs`, counted by the callers), per 100 ms
/// window, for `time`; the median window (a window where the server lost its core to another
/// process counts that time inside a command: the median leaves those out). Per pair, not per
/// EVALSHA: calls that travel together are one EVALSHA.
double pair_windows(admin& a, std::chrono::duration<double> time, const std::atomic<std::uint64_t>& pairs) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    std::vector<double> windows;
    auto last = a.evalsha();
    auto last_pairs = pairs.load();
    for (auto end = std::chrono::steady_clock::now() + time; std::chrono::steady_clock::now() < end;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        const auto now_stats = a.evalsha();
        const auto now_pairs = pairs.load();
        const double done = static_cast<double>(now_pairs - last_pairs), usec = now_stats.second - last.second;
        if (done > 0) windows.push_back(usec / done);
        last = now_stats;
        last_pairs = now_pairs;
    }
    return median(std::move(windows));
}

/// Server microseconds per acquire+release pair while `threads` callers (the blocking API) do
/// pairs as fast as they can (`pair_windows`).
double pair_under_load(admin& a, bool with_tenant, int threads, std::chrono::duration<double> time) {
    auto l = make_limiter(fmt::format("st-load-{}", with_tenant), with_tenant);
    const std::string_view tenant = with_tenant ? "biz1" : "";
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> pairs{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < threads; ++t)
        callers.emplace_back([&, t] {
            const auto ids = call_ids(t);
            for (std::size_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
                l->acquire(ids[i & 4095], tenant);
                l->release(ids[i & 4095]);
                pairs.fetch_add(1, std::memory_order_relaxed);
            }
        });
    const double pair = pair_windows(a, time, pairs);
    stop = true;
    for (auto& c : callers) c.join();
    return pair;
}

/// The async API's load, the shape of the peer's (one Node thread, its workers sharing one
/// connection): `callers` coroutines on one io_context thread, each doing acquire+release pairs,
/// or (apart) acquiring `batch` ids, all waiting, releasing them, all waiting. The statistics are
/// read from the calling thread: every 100 ms under load, between the phases apart. Each caller
/// cycles through its 4096 ids, so the set of remembered releases stays as small as a service's.
class async_load {
public:
    async_load(bool with_tenant, int callers)
        : limiter_(callguard::redis_backend(ioc_.get_executor(), options(with_tenant)), config(with_tenant),
                   callguard::limiter_hooks{callguard::null_sink(), {}}),
          tenant_(with_tenant ? "biz1" : "") {
        for (int w = 0; w < callers; ++w) callers_.push_back({call_ids(w), 0});
    }

    double pair_under_load(admin& a, std::chrono::duration<double> time) {
        std::atomic<bool> stop{false};
        for (auto& c : callers_) boost::asio::co_spawn(ioc_, pairs(c, stop), boost::asio::detached);
        std::thread io([this] { ioc_.run(); });
        const double pair = pair_windows(a, time, pairs_);
        stop = true;
        io.join();
        ioc_.restart();
        return pair;
    }

    /// The share of acquires and releases so far that travelled with others as one script call.
    double travelled_together() const {
        const auto calls = 2 * pairs_.load() + apart_calls_;
        return calls ? static_cast<double>(limiter_.backend().batched_calls()) / static_cast<double>(calls) : 0;
    }

    std::pair<double, double> apart(admin& a, std::chrono::duration<double> time) {
        std::vector<double> acquires, releases;
        const auto start = std::chrono::steady_clock::now();
        for (auto elapsed = std::chrono::steady_clock::duration{}; elapsed < time + std::chrono::milliseconds(300);
             elapsed = std::chrono::steady_clock::now() - start) {
            const bool measuring = elapsed > std::chrono::milliseconds(300); // warm first
            for (bool releasing : {false, true}) {
                const auto before = a.evalsha();
                for (auto& c : callers_) boost::asio::co_spawn(ioc_, step(c, releasing), boost::asio::detached);
                ioc_.run();
                ioc_.restart();
                const auto after = a.evalsha();
                const auto calls = callers_.size() * batch; // operations, whatever travelled together
                apart_calls_ += calls;
                const double usec = after.second - before.second;
                if (measuring) (releasing ? releases : acquires).push_back(usec / static_cast<double>(calls));
            }
        }
        return {median(std::move(acquires)), median(std::move(releases))};
    }

private:
    static constexpr std::size_t batch = 8;
    struct caller {
        std::vector<std::string> ids;
        std::size_t next;
    };

    static callguard::redis_options options(bool with_tenant) {
        auto o = callguard::redis_options::from_env();
        o.key_prefix = fmt::format("st-async-{}", with_tenant);
        o.command_timeout = o.connect_timeout = std::chrono::milliseconds(2000);
        return o;
    }
    static callguard::limiter_config config(bool with_tenant) {
        auto c = bench_config(1'000'000'000);
        if (with_tenant) c.tenant_limits["biz1"] = 1'000'000'000;
        return c;
    }

    boost::asio::awaitable<void> pairs(caller& c, const std::atomic<bool>& stop) {
        while (!stop.load(std::memory_order_relaxed)) {
            const auto& id = c.ids[c.next++ & 4095];
            co_await callguard::async_acquire(limiter_, id, tenant_, boost::asio::use_awaitable);
            co_await callguard::async_release(limiter_, id, boost::asio::use_awaitable);
            pairs_.fetch_add(1, std::memory_order_relaxed);
        }
    }

    /// Acquires the caller's next `batch` ids, or releases the last `batch` it acquired.
    boost::asio::awaitable<void> step(caller& c, bool releasing) {
        if (releasing) c.next -= batch;
        for (std::size_t i = 0; i < batch; ++i) {
            const auto& id = c.ids[c.next++ & 4095];
            if (releasing)
                co_await callguard::async_release(limiter_, id, boost::asio::use_awaitable);
            else
                co_await callguard::async_acquire(limiter_, id, tenant_, boost::asio::use_awaitable);
        }
    }

    boost::asio::io_context ioc_{1};
    callguard::capacity_limiter<callguard::redis_backend> limiter_;
    std::string tenant_;
    std::vector<caller> callers_;
    std::atomic<std::uint64_t> pairs_{0}; // read by the sampling thread
    std::uint64_t apart_calls_ = 0;
};

/// Prints, for no tenant and a tenant, `server_time tenant=T pair_us=P acquire_us=A
/// release_us=R pair_threads_us=PT pair_one_us=P1 together=S`: P, A and R from the async API's
/// load (16 coroutines, like the peer's 16 workers; A and R apart, 8 calls each), PT under load
/// from 16 threads, P1 from one coroutine (every call a script call of its own); S the share of
/// the 16 coroutines' calls that travelled with others as one script call.
int run(std::chrono::duration<double> time) {
    auto o = callguard::redis_options::from_env();
    admin a(o);
    for (bool with_tenant : {false, true}) {
        const double threads_pair = pair_under_load(a, with_tenant, 16, time);
        async_load one(with_tenant, 1);
        const double one_pair = one.pair_under_load(a, time);
        async_load load(with_tenant, 16);
        const double pair = load.pair_under_load(a, time);
        const auto [acquire, release] = load.apart(a, time);
        fmt::print("server_time tenant={} pair_us={:.2f} acquire_us={:.2f} release_us={:.2f} pair_threads_us={:.2f} "
                   "pair_one_us={:.2f} together={:.2f}\n",
                   with_tenant ? 1 : 0, pair, acquire, release, threads_pair, one_pair, load.travelled_together());
    }
    return 0;
}

} // namespace server_time

/// The async API: `callers` coroutines on one io_context thread (the benchmark's own), over a
/// Redis backend on that io_context, each doing acquire+release pairs one after the other; one
/// benchmark iteration is one pair. Registered as `acquire_release_async/redis/<callers>`.
void acquire_release_async(benchmark::State& state) {
    namespace asio = boost::asio;
    const int callers = static_cast<int>(state.range(0));
    asio::io_context ioc(1);
    auto o = callguard::redis_options::from_env();
    o.key_prefix = fmt::format("bench-async-{}", callers);
    o.command_timeout = o.connect_timeout = std::chrono::milliseconds(2000);
    callguard::capacity_limiter<callguard::redis_backend> l(callguard::redis_backend(ioc.get_executor(), o),
                                                             bench_config(1'000'000), {callguard::null_sink(), {}});
    latencies lat(1 << 20);
    std::int64_t left = 0; // pairs still to do in this round, shared by the coroutines (one thread)
    std::vector<std::vector<std::string>> ids;
    for (int w = 0; w < callers; ++w) ids.push_back(call_ids(w));
    auto worker = [&](int w) -> asio::awaitable<void> {
        const auto& mine = ids[static_cast<std::size_t>(w)];
        for (std::size_t i = 0; left > 0; ++i) {
            --left;
            const auto& id = mine[i & 4095];
            const auto t0 = std::chrono::steady_clock::now();
            benchmark::DoNotOptimize(co_await callguard::async_acquire(l, id, asio::use_awaitable));
            lat.add(std::chrono::steady_clock::now() - t0);
            benchmark::DoNotOptimize(co_await callguard::async_release(l, id, asio::use_awaitable));
        }
    };
    // Warm: the connection and the scripts, outside the measurement.
    left = callers;
    for (int w = 0; w < callers; ++w) asio::co_spawn(ioc, worker(w), asio::detached);
    ioc.run();
    // Rounds of 64 pairs per caller: the coroutines stay busy together, with no barrier per pair.
    constexpr std::int64_t per_caller = 64;
    while (state.KeepRunningBatch(callers * per_caller)) {
        left = callers * per_caller;
        ioc.restart();
        for (int w = 0; w < callers; ++w) asio::co_spawn(ioc, worker(w), asio::detached);
        ioc.run();
    }
    lat.report(state, "acquire");
    state.counters["pairs/s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                   benchmark::Counter::kIsRate);
}
#endif

} // namespace

int main(int argc, char** argv) {
#ifdef CALLGUARD_BENCH_REDIS
    // bench/compare.sh loads our acquire script into redis-benchmark with this; any script by
    // its name (acquire, release, ...) for measuring one alone.
    if (argc == 2 && std::string_view(argv[1]) == "--print-acquire-script") {
        fmt::print("{}", callguard::detail::lua::acquire);
        return 0;
    }
    if (argc == 3 && std::string_view(argv[1]) == "--print-script") {
        static constexpr const char* names[] = {"acquire", "release", "refresh", "count",
                                                "cleanup_expired", "reinstate", "wait_turn",
                                                "leave_line", "line_status", "claim"};
        static_assert(std::size(names) == callguard::detail::script_count);
        for (std::size_t i = 0; i < std::size(names); ++i)
            if (std::string_view(argv[2]) == names[i]) {
                fmt::print("{}", callguard::detail::script_source(static_cast<callguard::detail::script_id>(i)));
                return 0;
            }
        fmt::print(stderr, "--print-script: no script named {}\n", argv[2]);
        return 2;
    }
    // bench/compare.sh --server-time: the server's time per operation, REDIS_URL's server.
    if (argc >= 2 && std::string_view(argv[1]) == "--server-time") {
        if (!std::getenv("REDIS_URL")) {
            fmt::print(stderr, "--server-time needs REDIS_URL\n");
            return 2;
        }
        return server_time::run(std::chrono::duration<double>(argc > 2 ? std::atof(argv[2]) : 2.0));
    }
#endif
    register_all<memory_maker>({1, 2}, 1'000'000);
#ifdef CALLGUARD_BENCH_REDIS
    if (std::getenv("REDIS_URL")) {
        const char* max_held = std::getenv("CALLGUARD_BENCH_MAX_HELD");
        const std::int64_t held = max_held ? std::atoll(max_held) : 1'000'000;
        register_all<redis_maker<callguard::redis_connection_mode::multiplexed>>({1, 2, 16, 64}, held);
        register_all<redis_maker<callguard::redis_connection_mode::pooled>>({1, 2, 16, 64}, held);
        auto* async = benchmark::RegisterBenchmark("acquire_release_async/redis", acquire_release_async);
        async->UseRealTime();
        for (int callers : {1, 16, 64}) async->Arg(callers);
    }
#endif
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
}
