#pragma once

#include <cstddef>
#include <functional>
#include <string_view>

namespace callguard::detail {

/// Transparent hash: unordered containers keyed by `std::string` can be searched with a
/// `std::string_view` without building a string.
struct string_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
        return std::hash<std::string_view>{}(s);
    }
};

} // namespace callguard::detail
