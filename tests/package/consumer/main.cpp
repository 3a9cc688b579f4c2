// A process spawned through ember::runtime spawns a child that sends it a
// message back; exits 0 if the message arrived.
#include <ember/ember.hpp>

#include <chrono>
#include <future>
#include <iostream>
#include <string>

using namespace std::chrono_literals;

int main() {
  ember::runtime rt(ember::runtime_options{.schedulers = 2});
  std::promise<std::string> answer;
  rt.spawn([&answer] {
    ember::pid parent = ember::self();
    ember::spawn([parent] { ember::send(parent, "hello from " + ember::self().to_string()); });
    answer.set_value(ember::receive([](std::string s) { return s; },
                                    ember::after(10s, [] { return std::string("timeout"); })));
  });
  std::string got = answer.get_future().get();
  std::cout << "consumer: " << got << '\n';
  if (!rt.wait_for(10s)) {
    std::cerr << "consumer: processes still alive after 10 s\n";
    return 1;
  }
  return got.starts_with("hello from <") ? 0 : 1;
}
