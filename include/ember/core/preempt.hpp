// Preemption control for the calling process.
//
// A process running code that never calls the runtime is interrupted after
// runtime_options::time_slice and the scheduler runs others. Code that must
// not be interrupted between two instructions (it holds an OS mutex another
// process on the same thread could wait for, it talks to hardware, it times
// itself) says so with a no_preempt guard; a pending preemption then
// happens when the last guard ends. Outside processes these do nothing.
#pragma once

namespace ember {

// While alive, the calling process is not preempted asynchronously. Nests.
// Does not stop cooperative yields in runtime calls (send, receive...).
class no_preempt {
 public:
  no_preempt() noexcept;
  ~no_preempt();
  no_preempt(const no_preempt&) = delete;
  no_preempt& operator=(const no_preempt&) = delete;

 private:
  void* process_;
};

// True if the calling process may be preempted asynchronously here (no
// guard, not spawned with preemptible = false, async preemption on).
bool preemptible() noexcept;

}  // namespace ember
