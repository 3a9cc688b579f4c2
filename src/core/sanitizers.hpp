// Telling AddressSanitizer and ThreadSanitizer about stack switches; no-ops
// in normal builds. Without these both report nonsense on fibers.
#pragma once

#include <cstddef>

#if defined(EMBER_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(EMBER_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

namespace ember::detail::sanitizers {

inline void* create_fiber() noexcept {
#if defined(EMBER_TSAN)
  return __tsan_create_fiber(0);
#else
  return nullptr;
#endif
}
inline void destroy_fiber(void* f) noexcept {
#if defined(EMBER_TSAN)
  if (f) __tsan_destroy_fiber(f);
#else
  (void)f;
#endif
}
inline void* current_fiber() noexcept {
#if defined(EMBER_TSAN)
  return __tsan_get_current_fiber();
#else
  return nullptr;
#endif
}
// Call right before jumping to another stack. fake_stack_save == nullptr
// means the current stack will never be resumed.
inline void start_switch(void** fake_stack_save, const void* bottom, std::size_t size, void* fiber) noexcept {
#if defined(EMBER_ASAN)
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save, (void)bottom, (void)size;
#endif
#if defined(EMBER_TSAN)
  __tsan_switch_to_fiber(fiber, 0);
#else
  (void)fiber;
#endif
}
// A stack whose frames were abandoned, not unwound (heap limit, stack
// overflow): ASan's poisoning of those frames must not outlive them.
inline void forget_stack(const void* bottom, std::size_t size) noexcept {
#if defined(EMBER_ASAN)
  __asan_unpoison_memory_region(bottom, size);
#else
  (void)bottom, (void)size;
#endif
}
// Call first thing after arriving on a stack.
inline void finish_switch(void* fake_stack_save, const void** old_bottom, std::size_t* old_size) noexcept {
#if defined(EMBER_ASAN)
  __sanitizer_finish_switch_fiber(fake_stack_save, old_bottom, old_size);
#else
  (void)fake_stack_save, (void)old_bottom, (void)old_size;
#endif
}

}  // namespace ember::detail::sanitizers
