// hello: spawn a process, talk to it, and watch it die.
#include <ember/ember.hpp>

#include <iostream>
#include <stdexcept>
#include <string>

using namespace std::chrono_literals;

struct greet {
  ember::pid from;
  std::string name;
};

int main() {
  ember::runtime rt;
  rt.spawn([] {
    auto [greeter, ref] = ember::spawn_monitor([] {
      ember::receive([](greet g) { ember::send(g.from, "hello, " + g.name); });
      throw std::runtime_error("no more greetings");
    });
    ember::send(greeter, greet{ember::self(), "world"});
    ember::receive([](std::string s) { std::cout << s << '\n'; },
                   ember::after(1s, [] { std::cout << "no answer\n"; }));
    ember::receive([](ember::down d) { std::cout << d.who << " exited: " << d.reason << '\n'; });
  });
  rt.wait();
}
