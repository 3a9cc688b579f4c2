// kv: a key-value store as a gen_server under a supervisor (the README's
// second example). A bad request crashes the store; its caller gets the
// reason, the supervisor restarts it, and the next call is served.
#include <ember/ember.hpp>
#include <iostream>
#include <future>
#include <map>
#include <stdexcept>

struct put { std::string key, value; };
struct get { std::string key; };

struct store {  // a gen_server: every callback optional
  std::map<std::string, std::string> data;
  void handle_call(ember::message& request, ember::from from) {
    ember::dispatch(request,
        [&](const put& p) { data[p.key] = p.value; ember::reply(from, true); },
        [&](const get& g) { ember::reply(from, data.at(g.key)); });  // unknown key: throws
  }
};

int main() {
  ember::runtime rt;
  auto app = ember::start(rt, {.name = "kv",
      .spec = {.children = {ember::supervisor::worker<store>("store", ember::gen_server::options{.name = "store"})}}});
  std::promise<void> done;
  rt.spawn([&done] {
    ember::gen_server::call<bool>("store", put{"lang", "C++"});
    std::cout << ember::gen_server::call<std::string>("store", get{"lang"}) << '\n';
    try {
      ember::gen_server::call<std::string>("store", get{"nope"});
    } catch (const ember::exit_error& e) {
      std::cout << "failed: " << e.reason() << '\n';  // the store crashed...
    }
    while (!ember::whereis("store")) ember::yield();      // ...and is restarted, empty
    ember::gen_server::call<bool>("store", put{"lang", "C++20"});
    std::cout << ember::gen_server::call<std::string>("store", get{"lang"}) << '\n';
    done.set_value();
  });
  done.get_future().wait();
  app.stop();  // the tree, in reverse start order
}
