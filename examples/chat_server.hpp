// The chat server of examples/chat.cpp, shared with the demo (examples/
// demo.cpp): rooms, the directory that opens them, and the connection
// handler. Each program builds its own supervision tree around them.
//
// The protocol is lines: "/nick NAME", "/join ROOM", "/who", "/quit"; any
// other line goes to everyone in the room as "[ROOM] NICK: text". Replies
// start with "* ", errors with "! ".
#pragma once

#include <ember/ember.hpp>

#include <map>
#include <set>
#include <stdexcept>
#include <string>

namespace chat {

namespace net = ember::net;
using namespace std::chrono_literals;

// ------------------------------------------------------------------ rooms

struct join { ember::pid who; std::string nick; };  // call -> bool (again: a new nick)
struct leave { ember::pid who; };                  // cast
struct say { std::string nick, text; };            // cast: to everyone in the room
struct who_is_here {};                             // call -> "* in ROOM: a, b"
struct chat_line { std::string text; };            // room -> member: write this line

// A room knows its members by pid and monitors them: a member that dies
// (a crash, a dropped connection) is forgotten without anybody telling it.
struct room {
  struct member { std::string nick; ember::monitor_ref ref; };
  std::string name;
  std::map<ember::pid, member> members;

  explicit room(std::string n) : name(std::move(n)) {}
  void handle_call(ember::message& request, ember::from from) {
    ember::dispatch(request,
        [&](const join& j) {
          auto [it, added] = members.try_emplace(j.who);
          if (added) it->second.ref = ember::monitor(j.who);
          it->second.nick = j.nick;
          ember::reply(from, true);
        },
        [&](who_is_here) {
          std::set<std::string> nicks;
          for (auto& [pid, m] : members) nicks.insert(m.nick);
          std::string text = "* in " + name + ":";
          for (auto& n : nicks) text += (text.back() == ':' ? " " : ", ") + n;
          ember::reply(from, text);
        });
  }
  void handle_cast(ember::message& m) {
    ember::dispatch(m,
        [&](const leave& l) {
          if (auto it = members.find(l.who); it != members.end()) {
            ember::demonitor(it->second.ref, true);
            members.erase(it);
          }
        },
        [&](const say& s) {  // one sender's lines reach every member in the order said
          chat_line line{"[" + name + "] " + s.nick + ": " + s.text};
          for (auto& [pid, m] : members) ember::send(pid, line);
        });
  }
  void handle_info(ember::message& m) {
    if (auto* d = m.get_if<ember::down>()) members.erase(d->who);
  }
};

struct open_room { std::string name; };  // call -> the room's pid

// A room registers itself as "room:NAME", so finding one is a whereis.
// Creating one goes through this single process, so that two clients
// joining a new room at once cannot start it twice. Rooms are children of
// the dynamic supervisor registered as "room_sup", started from the
// supervisor's template (its restart type says whether a dead room comes
// back) as a Room (room, or a type derived from it).
//
// If rooms come back (permanent or transient children), a room that died
// is absent from the registry until its supervisor has restarted it;
// starting another one then would race the restart for the name (and the
// restart that lost would be retried until the supervisor gave up). So a
// room opened here before is waited for, up to a second, not started again.
template <class Room = room>
struct directory {
  bool rooms_come_back = false;
  std::set<std::string> opened;

  explicit directory(bool come_back = false) : rooms_come_back(come_back) {}
  void handle_call(ember::message& request, ember::from from) {
    ember::dispatch(request, [&](const open_room& r) {
      std::string registered = "room:" + r.name;
      ember::pid p = ember::whereis(registered);
      if (!p && rooms_come_back && opened.contains(r.name)) {
        for (int i = 0; i < 1000 && !(p = ember::whereis(registered)); ++i) ember::sleep_for(1ms);
      }
      if (!p) {
        p = ember::dynamic_supervisor::start_child("room_sup", [name = r.name, registered] {
          return ember::gen_server::start_link<Room>(ember::gen_server::options{.name = registered}, name);
        });
        opened.insert(r.name);
      }
      ember::reply(from, p);
    });
  }
};

// ------------------------------------------------------------ connections

// One process per connection. It waits for two kinds of input at once, its
// client's lines and its room's broadcasts, so it reads the socket in active
// mode: set_active_once() makes the next bytes a socket_data message, and a
// single receive takes whichever comes first.
//
// What it writes collects in a buffer that goes out when the mailbox is
// empty (or the buffer holds 16 KiB): a burst of broadcasts costs one write,
// not one per line. The order of the lines is the order of the messages.
class connection {
 public:
  explicit connection(net::stream s) : conn_(std::move(s)) {}

  void run() {
    write_line("* welcome: /nick NAME, /join ROOM, /who, /quit; other lines talk");
    conn_.set_active_once();
    do {
      if (out_.size() >= 16 * 1024 || ember::message_queue_len() == 0) flush();
    } while (ember::receive(
        [&](net::socket_data d) { return on_data(d.data); },
        [&](const chat_line& l) { write_line(l.text); return true; },
        [&](const ember::down&) {  // we monitor only our room: it died
          room_ = {};
          write_line("! your room closed; /join again");
          return true;
        },
        [&](const net::socket_closed&) { return false; },
        [&](const net::socket_error&) { return false; }));
    try {
      flush();  // "* bye", or replies to a client that sent its last lines and closed its side
    } catch (const net::net_error&) {  // or closed both: nobody to tell
    }
  }  // returning closes the socket; the room's monitor drops us

 private:
  // Data comes in chunks, not lines: keep the unfinished tail. (The spawn's
  // max_heap_bytes bounds it against a client that never sends "\n".)
  bool on_data(const std::string& data) {
    pending_ += data;
    for (std::size_t nl; (nl = pending_.find('\n')) != std::string::npos;) {
      std::string line = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!on_line(line)) return false;
    }
    conn_.set_active_once();  // ready for the next chunk
    return true;
  }

  bool on_line(const std::string& line) {
    std::size_t space = line.find(' ');
    std::string cmd = line.substr(0, space), arg = space == std::string::npos ? "" : line.substr(space + 1);
    if (cmd == "/quit") {
      write_line("* bye");
      return false;
    } else if (cmd == "/crash") {  // hidden: shows that a crash stays in this process
      throw std::runtime_error("crash requested by " + nick_);
    } else if (cmd == "/nick" && !arg.empty()) {
      nick_ = arg;
      if (room_) ember::gen_server::call<bool>(room_, join{ember::self(), nick_});
      write_line("* you are " + nick_);
    } else if (cmd == "/join" && !arg.empty()) {
      enter(arg);
    } else if (line.starts_with("/") && cmd != "/who") {
      write_line("! unknown command or missing argument: " + line);
    } else if (!room_) {
      write_line("! join a room first");
    } else if (cmd == "/who") {
      write_line(ember::gen_server::call<std::string>(room_, who_is_here{}));
    } else {
      ember::gen_server::cast(room_, say{nick_, line});
    }
    return true;
  }

  void enter(const std::string& name) {
    if (room_) {
      ember::gen_server::cast(room_, leave{ember::self()});
      ember::demonitor(room_ref_, true);
    }
    room_ = ember::gen_server::call<ember::pid>("rooms", open_room{name});
    room_ref_ = ember::monitor(room_);
    ember::gen_server::call<bool>(room_, join{ember::self(), nick_});
    write_line("* joined " + name);
  }

  void write_line(const std::string& text) {
    out_ += text;
    out_ += '\n';
  }
  // A client that stops reading is dropped (the timeout ends this process)
  // rather than holding its handler, and its room's messages, for ever.
  void flush() {
    if (out_.empty()) return;
    conn_.write(out_, 10s);
    out_.clear();
  }

  net::stream conn_;
  std::string pending_, out_, nick_ = "guest";
  ember::pid room_;
  ember::monitor_ref room_ref_;
};

}  // namespace chat
