// The calls service's call log queue and writer thread, over a scripted store: the database
// can be made unavailable, slow, or refuse rows, so every path of the writer is exercised
// (the real SQLite and PostgreSQL stores are tested in tests/service/).

#include "call_log.hpp"
#include "call_log_schema.hpp"

#include "support/probes.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using calls::call_log;
using calls::call_log_options;
using calls::call_row;
using calls::call_store;

namespace {

/// The "database" behind a scripted store: what it holds and how it behaves now.
struct fake_database {
    std::mutex mu;
    std::vector<std::string> rows;        // call_sids in the order they were committed
    bool up = true;                       // false: connecting throws, writing takes nothing
    std::size_t take_then_fail = 0;       // >0: the next write takes this many rows, then the database goes down
    std::set<std::string> refused;        // call_sids refused for good (bad data)
    std::chrono::milliseconds write_delay{0};
    std::vector<std::chrono::steady_clock::time_point> attempts; // every connect or write attempt
    std::size_t largest_batch = 0;

    void set_up(bool v) {
        std::lock_guard lk(mu);
        up = v;
    }
    std::vector<std::string> snapshot() {
        std::lock_guard lk(mu);
        return rows;
    }
};

class scripted_store final : public call_store {
public:
    explicit scripted_store(std::shared_ptr<fake_database> db) : db_(std::move(db)) {}

    outcome write(std::span<const call_row> batch) override {
        std::chrono::milliseconds delay;
        {
            std::lock_guard lk(db_->mu);
            delay = db_->write_delay;
        }
        if (delay.count() > 0) std::this_thread::sleep_for(delay);
        std::lock_guard lk(db_->mu);
        db_->attempts.push_back(std::chrono::steady_clock::now());
        db_->largest_batch = std::max(db_->largest_batch, batch.size());
        if (!db_->up) return {0, 0, "connection lost"};
        outcome out;
        for (const auto& r : batch) {
            if (db_->take_then_fail > 0 && out.written + out.failed == db_->take_then_fail) {
                db_->take_then_fail = 0;
                db_->up = false;
                out.error = "connection lost mid-batch";
                return out;
            }
            if (db_->refused.count(r.call_sid)) {
                ++out.failed;
                out.error = "invalid byte sequence";
            } else {
                db_->rows.push_back(r.call_sid);
                ++out.written;
            }
        }
        return out;
    }

    // The call log's writer never touches the outbox's sender side.
    std::vector<calls::outbox_message> claim_due_messages(std::size_t, std::chrono::milliseconds) override {
        throw std::logic_error("not the writer's");
    }
    void record_sent(const std::string&, const std::string&) override { throw std::logic_error("not the writer's"); }
    void record_retry(const std::string&, std::chrono::milliseconds, std::optional<int>, const std::string&) override {
        throw std::logic_error("not the writer's");
    }
    void record_failed(const std::string&, std::optional<int>, const std::string&) override {
        throw std::logic_error("not the writer's");
    }

private:
    std::shared_ptr<fake_database> db_;
};

/// Messages the log printed, thread-safe.
struct messages {
    std::mutex mu;
    std::vector<std::string> lines;
    call_log::warning sink() {
        return [this](const std::string& m) {
            std::lock_guard lk(mu);
            lines.push_back(m);
        };
    }
    std::size_t count(const std::string& needle) {
        std::lock_guard lk(mu);
        return static_cast<std::size_t>(std::count_if(lines.begin(), lines.end(), [&](const std::string& l) {
            return l.find(needle) != std::string::npos;
        }));
    }
    std::string all() {
        std::lock_guard lk(mu);
        std::string out;
        for (auto& l : lines) out += l + "\n";
        return out;
    }
};

call_log::store_factory factory_for(std::shared_ptr<fake_database> db) {
    return [db](std::stop_token) -> std::unique_ptr<call_store> {
        {
            std::lock_guard lk(db->mu);
            db->attempts.push_back(std::chrono::steady_clock::now());
            if (!db->up) throw std::runtime_error("connection refused");
        }
        return std::make_unique<scripted_store>(db);
    };
}

call_row row(const std::string& sid) {
    call_row r;
    r.call_sid = sid;
    r.status = "admitted";
    return r;
}

std::vector<std::string> sids(const std::string& prefix, int n) {
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) out.push_back(prefix + std::to_string(i));
    return out;
}

call_log_options fast_options() {
    call_log_options o;
    o.retry_min = 5ms;
    o.retry_max = 40ms;
    o.shutdown_grace = 300ms;
    return o;
}

} // namespace

TEST_CASE("call log: rows are written in order, in batches of at most batch_limit") {
    auto db = std::make_shared<fake_database>();
    messages msgs;
    auto opts = fast_options();
    opts.batch_limit = 16;
    {
        std::lock_guard lk(db->mu);
        db->write_delay = 2ms; // let rows pile up behind a write
    }
    call_log log(factory_for(db), msgs.sink(), opts);
    const auto expected = sids("CA", 200);
    for (auto& s : expected) log.push(row(s));
    REQUIRE(log.flush(5s));
    CHECK(db->snapshot() == expected);
    CHECK(log.written() == 200);
    CHECK(log.dropped() == 0);
    CHECK(log.queued() == 0);
    CHECK(db->largest_batch <= 16);
    CHECK(db->largest_batch > 1);
    CHECK(msgs.all().empty());
}

TEST_CASE("call log: while the database is down rows wait, then are written once, in order") {
    auto db = std::make_shared<fake_database>();
    messages msgs;
    call_log log(factory_for(db), msgs.sink(), fast_options());
    log.push(row("CA-before"));
    REQUIRE(log.flush(2s));
    db->set_up(false);
    const auto waiting = sids("CA-down-", 300);
    for (auto& s : waiting) log.push(row(s));
    CHECK(test::eventually([&] { return msgs.count("database unavailable") == 1; }, 2s));
    CHECK(test::eventually([&] { return !log.database_up(); }, 2s));
    std::this_thread::sleep_for(300ms); // many retries
    CHECK(log.queued() == 300);
    CHECK(db->snapshot().size() == 1);
    db->set_up(true);
    REQUIRE(log.flush(3s));
    auto expected = waiting;
    expected.insert(expected.begin(), "CA-before");
    CHECK(db->snapshot() == expected);
    CHECK(log.dropped() == 0);
    CHECK(log.database_up());
    // One line for the outage, one for the recovery, however many retries there were.
    CHECK(test::eventually([&] { return msgs.count("database available again") == 1; }, 2s));
    CHECK(msgs.count("database unavailable") == 1);
    CAPTURE(msgs.all());
}

TEST_CASE("call log: beyond CALLS_DB_QUEUE_LIMIT rows are dropped, counted exactly, logged once per burst") {
    auto db = std::make_shared<fake_database>();
    messages msgs;
    auto opts = fast_options();
    opts.queue_limit = 50;
    call_log log(factory_for(db), msgs.sink(), opts);
    db->set_up(false);
    const auto all = sids("CA-", 80);
    for (auto& s : all) log.push(row(s));
    CHECK(log.dropped() == 30);
    CHECK(log.queued() == 50); // the batch held by the writer counts
    CHECK(msgs.count("queue full (50 rows waiting") == 1);
    db->set_up(true);
    REQUIRE(log.flush(3s));
    CHECK(db->snapshot() == std::vector<std::string>(all.begin(), all.begin() + 50)); // the first 50
    CHECK(test::eventually([&] { return msgs.count("queue has room again; 30 rows were dropped") == 1; }, 2s));

    // A second burst is reported with its own count.
    db->set_up(false);
    for (auto& s : sids("CB-", 55)) log.push(row(s));
    CHECK(log.dropped() == 35);
    CHECK(msgs.count("queue full") == 2);
    db->set_up(true);
    REQUIRE(log.flush(3s));
    CHECK(test::eventually([&] { return msgs.count("queue has room again; 5 rows were dropped") == 1; }, 2s));
    CAPTURE(msgs.all());
}

TEST_CASE("call log: a batch cut mid-way keeps its unwritten rows and retries them in order") {
    auto db = std::make_shared<fake_database>();
    messages msgs;
    auto opts = fast_options();
    opts.batch_limit = 100;
    {
        std::lock_guard lk(db->mu);
        db->write_delay = 20ms; // the first write takes one row, the rest queue behind it
    }
    call_log log(factory_for(db), msgs.sink(), opts);
    const auto all = sids("CA-", 60);
    log.push(row(all[0]));
    std::this_thread::sleep_for(5ms);
    {
        std::lock_guard lk(db->mu);
        db->take_then_fail = 10;
    }
    for (std::size_t i = 1; i < all.size(); ++i) log.push(row(all[i]));
    CHECK(test::eventually([&] { return msgs.count("database unavailable") == 1; }, 3s));
    db->set_up(true);
    REQUIRE(log.flush(5s));
    CHECK(db->snapshot() == all);
    CHECK(log.written() == 60);
}

TEST_CASE("call log: rows the database refuses for good are counted and not retried") {
    auto db = std::make_shared<fake_database>();
    messages msgs;
    {
        std::lock_guard lk(db->mu);
        db->refused = {"CA-bad1", "CA-bad2"};
    }
    call_log log(factory_for(db), msgs.sink(), fast_options());
    for (auto s : {"CA-1", "CA-bad1", "CA-2", "CA-bad2", "CA-3"}) log.push(row(s));
    REQUIRE(log.flush(2s));
    CHECK(db->snapshot() == std::vector<std::string>{"CA-1", "CA-2", "CA-3"});
    CHECK(log.failed() == 2);
    CHECK(log.written() == 3);
    CHECK(log.database_up());
    CHECK(msgs.count("refused by the database") == 1); // at most one line a minute
    CHECK(msgs.count("database unavailable") == 0);
}

TEST_CASE("call log: retries back off exponentially up to retry_max, never a busy loop") {
    auto db = std::make_shared<fake_database>();
    messages msgs;
    auto opts = fast_options();
    opts.retry_min = 5ms;
    opts.retry_max = 40ms;
    db->set_up(false);
    call_log log(factory_for(db), msgs.sink(), opts);
    log.push(row("CA-1"));
    std::this_thread::sleep_for(800ms);
    std::vector<std::chrono::steady_clock::time_point> attempts;
    {
        std::lock_guard lk(db->mu);
        attempts = db->attempts;
    }
    // 5, 10, 20, 40, 40, 40 ... ms: about 20 attempts in 800 ms. Unbounded doubling would make
    // 8 (5 ... 320 ms), a busy loop thousands.
    CHECK(attempts.size() >= 12);
    CHECK(attempts.size() <= 30);
    for (std::size_t i = 1; i < attempts.size(); ++i) CHECK(attempts[i] - attempts[i - 1] >= 4ms);
    CHECK(attempts[2] - attempts[1] < attempts.back() - attempts[attempts.size() - 2]); // it did grow
    db->set_up(true);
    CHECK(log.flush(2s));
}

TEST_CASE("call log: the store is opened at start, so tables exist before the first call") {
    auto db = std::make_shared<fake_database>();
    messages msgs;
    call_log log(factory_for(db), msgs.sink(), fast_options());
    CHECK(test::eventually([&] {
        std::lock_guard lk(db->mu);
        return db->attempts.size() == 1;
    }, 2s));
    std::this_thread::sleep_for(50ms);
    std::lock_guard lk(db->mu);
    CHECK(db->attempts.size() == 1); // connected once, then idle: no polling of a healthy database
}

TEST_CASE("call log: destroyed while the database is down, it returns within its grace and counts the rows") {
    auto db = std::make_shared<fake_database>();
    messages msgs;
    auto opts = fast_options();
    opts.shutdown_grace = 300ms;
    auto t0 = std::chrono::steady_clock::now();
    {
        db->set_up(false);
        call_log log(factory_for(db), msgs.sink(), opts);
        for (auto& s : sids("CA-", 20)) log.push(row(s));
        t0 = std::chrono::steady_clock::now();
    }
    CHECK(std::chrono::steady_clock::now() - t0 < 300ms + 500ms);
    CHECK(msgs.count("20 rows not written at shutdown") == 1);
    CHECK(db->snapshot().empty());
}

TEST_CASE("call log: destroyed while the database is up, every queued row is written first") {
    auto db = std::make_shared<fake_database>();
    messages msgs;
    {
        std::lock_guard lk(db->mu);
        db->write_delay = 5ms;
    }
    {
        call_log log(factory_for(db), msgs.sink(), fast_options());
        for (auto& s : sids("CA-", 500)) log.push(row(s));
    }
    CHECK(db->snapshot().size() == 500);
    CHECK(msgs.all().empty());
}

TEST_CASE("call log: a store stuck on the network is released by the stop token at destruction") {
    std::atomic<bool> saw_stop{false};
    messages msgs;
    auto opts = fast_options();
    opts.shutdown_grace = 200ms;
    auto t0 = std::chrono::steady_clock::now();
    {
        call_log log(
            [&](std::stop_token st) -> std::unique_ptr<call_store> {
                // A connect to a frozen server: waits until told to stop.
                while (!st.stop_requested()) std::this_thread::sleep_for(5ms);
                saw_stop = true;
                throw std::runtime_error("stopped");
            },
            msgs.sink(), opts);
        log.push(row("CA-1"));
        t0 = std::chrono::steady_clock::now();
    }
    CHECK(saw_stop);
    CHECK(std::chrono::steady_clock::now() - t0 < 200ms + 500ms);
    CHECK(msgs.count("1 rows not written at shutdown") == 1);
}

TEST_CASE("call log: many threads pushing through outages: every row written once or counted dropped") {
    auto db = std::make_shared<fake_database>();
    messages msgs;
    auto opts = fast_options();
    opts.queue_limit = 300;
    opts.batch_limit = 64;
    call_log log(factory_for(db), msgs.sink(), opts);
    constexpr int threads = 8, per_thread = 2000;
    std::atomic<bool> done{false};
    std::thread flapper([&] { // the database goes away and comes back while rows flow
        while (!done) {
            db->set_up(false);
            std::this_thread::sleep_for(3ms);
            db->set_up(true);
            std::this_thread::sleep_for(7ms);
        }
        db->set_up(true);
    });
    std::vector<std::thread> pushers;
    for (int t = 0; t < threads; ++t)
        pushers.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) log.push(row("T" + std::to_string(t) + "-" + std::to_string(i)));
        });
    for (auto& p : pushers) p.join();
    done = true;
    flapper.join();
    REQUIRE(log.flush(5s));
    auto rows = db->snapshot();
    CHECK(rows.size() + log.dropped() == static_cast<std::size_t>(threads * per_thread));
    CHECK(log.written() == rows.size());
    // Once each, and in each thread's own order.
    std::set<std::string> unique(rows.begin(), rows.end());
    CHECK(unique.size() == rows.size());
    std::map<int, int> last;
    bool ordered = true;
    for (auto& r : rows) {
        auto dash = r.find('-');
        int t = std::stoi(r.substr(1, dash - 1)), i = std::stoi(r.substr(dash + 1));
        auto it = last.find(t);
        if (it != last.end() && it->second >= i) ordered = false;
        last[t] = i;
    }
    CHECK(ordered);
    CHECK(log.queued() == 0);
}

TEST_CASE("call log schema: the status rule, and the SQL generated from it") {
    using calls::schema::merged_status;
    CHECK(merged_status("admitted", "completed") == "completed");
    CHECK(merged_status("completed", "admitted") == "completed");
    CHECK(merged_status("rejected_capacity", "completed") == "rejected_capacity");
    CHECK(merged_status("completed", "rejected_capacity") == "rejected_capacity");
    CHECK(merged_status("completed", "rejected_unavailable") == "rejected_unavailable");
    CHECK(merged_status("admitted", "admitted") == "admitted");
    CHECK(merged_status("admitted", "rejected_capacity") == "admitted");
    CHECK(merged_status("rejected_capacity", "admitted") == "rejected_capacity");
    // The waiting room: queued until admitted, let go or hung up; a voicemail is the last word.
    CHECK(merged_status("queued", "admitted") == "admitted");
    CHECK(merged_status("queued", "rejected_capacity") == "rejected_capacity");
    CHECK(merged_status("queued", "completed") == "completed");
    CHECK(merged_status("admitted", "queued") == "admitted");
    CHECK(merged_status("completed", "queued") == "completed");
    CHECK(merged_status("rejected_capacity", "voicemail") == "voicemail");
    CHECK(merged_status("completed", "voicemail") == "voicemail");
    CHECK(merged_status("voicemail", "completed") == "voicemail");
    CHECK(merged_status("voicemail", "rejected_capacity") == "voicemail");
    CHECK(merged_status("admitted", "voicemail") == "admitted");
    const auto set = calls::schema::calls_conflict_update("c");
    CHECK(set.find("(c.status = 'admitted' AND excluded.status = 'completed')") != std::string::npos);
    CHECK(set.find("tenant = COALESCE(c.tenant, excluded.tenant)") != std::string::npos);
    CHECK(set.find("recording_sid = COALESCE(excluded.recording_sid, c.recording_sid)") != std::string::npos);
    CHECK(calls::schema::latest_version == 3);
}

TEST_CASE("call log schema: times are UTC ISO 8601 with milliseconds") {
    using namespace std::chrono;
    const auto t = sys_days{year{2024} / 2 / 29} + hours{23} + minutes{59} + seconds{58} + milliseconds{7};
    CHECK(calls::schema::format_time(t) == "2024-02-29T23:59:58.007Z");
    CHECK(calls::schema::format_time(system_clock::time_point{}) == "1970-01-01T00:00:00.000Z");
}

TEST_CASE("call log: the writer tells the WhatsApp sender after writing outbox rows, and only then") {
    auto db = std::make_shared<fake_database>();
    std::atomic<int> told{0};
    calls::call_log_options o;
    o.on_outbox_written = [&] { ++told; };
    calls::call_log log([db](std::stop_token) { return std::make_unique<scripted_store>(db); }, [](const std::string&) {},
                        o);
    call_row status;
    status.call_sid = "CA-status";
    status.status = "admitted";
    log.push(status);
    REQUIRE(log.flush(std::chrono::seconds(5)));
    CHECK(test::holds_for([&] { return told.load() == 0; }, std::chrono::milliseconds(200)));
    call_row outbox;
    outbox.what = call_row::kind::whatsapp_outbox;
    outbox.call_sid = "CA-outbox";
    outbox.number = "+15550001";
    log.push(outbox);
    REQUIRE(log.flush(std::chrono::seconds(5)));
    CHECK(test::eventually([&] { return told.load() == 1; }, std::chrono::seconds(2)));
}
