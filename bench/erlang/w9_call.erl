%% W9 call (BEAM peer of bench/w9_call.cpp): one gen_server holds a counter;
%% C client processes each make R gen_server:call(Server, incr), which the
%% server answers with the incremented counter, and time every call.
%%
%%   erl +P 4000000 -noshell -pa DIR -s w9_call main [R=10000] [C=100]
%%
%% The driver starts the server (gen_server:start, this module's callbacks)
%% and spawns the C clients; each says `ready` and waits for `go`. Once all
%% are ready the driver takes the start time and sends every client `go`;
%% the wall time ends when the last client reports it is done. Each client
%% records every call's latency (erlang:monotonic_time around the call) in
%% its own `counters` array with the buckets of bench/latency_hist.hpp
%% (bench_util:hist_bucket/1); the driver merges them at the end.
%%
%% Verification (halt 1 otherwise): no call failed; each client's replies
%% rise strictly; all replies sum to 1 + 2 + ... + C*R; the server's final
%% counter (a get_count call) is C*R; the histograms hold C*R samples.
%% Same RESULT line as ember's, plus runtime=beam.
-module(w9_call).
-export([main/0, main/1]).
-export([init/1, handle_call/3, handle_cast/2]).

-define(BUCKETS, (256 + 56 * 128)).

main() -> main([]).
main(Args) ->
    R = bench_util:arg(Args, 1, 10000),
    C = bench_util:arg(Args, 2, 100),
    spawn(fun() -> driver(R, C) end).

%% --- the server: one counter ------------------------------------------------------

init(N) -> {ok, N}.

handle_call(incr, _From, N) -> {reply, N + 1, N + 1};
handle_call(get_count, _From, N) -> {reply, N, N}.

handle_cast(_Msg, N) -> {noreply, N}.

%% --- the driver and the clients ---------------------------------------------------

driver(R, C) ->
    bench_util:watchdog("W9"),
    Me = self(),
    {ok, Server} = gen_server:start(?MODULE, 0, []),
    Clients = [spawn(fun() -> client(Server, Me, R) end) || _ <- lists:seq(1, C)],
    [receive ready -> ok end || _ <- Clients],
    T0 = bench_util:now_ns(),
    [P ! go || P <- Clients],
    Done = [receive {done, D} -> D end || _ <- Clients],
    T1 = bench_util:now_ns(),
    Final = gen_server:call(Server, get_count),
    ok = gen_server:stop(Server),
    Total = C * R,
    Failed = [Why || #{failed := Why} <- Done, Why =/= none],
    Failed =:= [] orelse bench_util:fail("W9: ~w clients' calls failed, first: ~p", [length(Failed), hd(Failed)]),
    Calls = lists:sum([N || #{calls := N} <- Done]),
    Sum = lists:sum([S || #{sum := S} <- Done]),
    NotRising = length([x || #{rising := false} <- Done]),
    Max = lists:max([M || #{max := M} <- Done]),
    Hists = [H || #{hist := H} <- Done],
    Counts = [lists:sum([counters:get(H, I) || H <- Hists]) || I <- lists:seq(1, ?BUCKETS)],
    Samples = lists:sum(Counts),
    ExpectedSum = Total * (Total + 1) div 2,
    {Calls, Sum, NotRising, Final, Samples} =:= {Total, ExpectedSum, 0, Total, Total} orelse
        bench_util:fail("W9: ~w calls made (expected ~w), replies sum to ~w (expected ~w), ~w clients saw "
                        "replies not rising, final counter ~w (expected ~w), ~w latency samples",
                        [Calls, Total, Sum, ExpectedSum, NotRising, Final, Total, Samples]),
    io:format("RESULT W9 calls_per_s=~w call_p99_us=~.3f call_p50_us=~.3f call_max_us=~.1f runtime=beam~n",
              [round(Total / ((T1 - T0) / 1.0e9)),
               bench_util:hist_quantile_ns(Counts, Total, 0.99) / 1000,
               bench_util:hist_quantile_ns(Counts, Total, 0.5) / 1000,
               Max / 1000]),
    bench_util:finish().

client(Server, Driver, R) ->
    Hist = counters:new(?BUCKETS, []),
    Driver ! ready,
    receive go -> ok end,
    Result =
        try calls(R, Server, Hist, 0, 0, 0, true, 0) of
            {N, S, Rising, Max} -> #{calls => N, sum => S, rising => Rising, max => Max, failed => none}
        catch
            exit:Reason -> #{calls => 0, sum => 0, rising => false, max => 0, failed => Reason}
        end,
    Driver ! {done, Result#{hist => Hist}}.

calls(0, _Server, _Hist, N, _Last, Sum, Rising, Max) -> {N, Sum, Rising, Max};
calls(K, Server, Hist, N, Last, Sum, Rising, Max) ->
    T0 = erlang:monotonic_time(nanosecond),
    V = gen_server:call(Server, incr),
    T1 = erlang:monotonic_time(nanosecond),
    D = T1 - T0,
    counters:add(Hist, bench_util:hist_bucket(D) + 1, 1),
    calls(K - 1, Server, Hist, N + 1, V, Sum + V, Rising andalso V > Last, max(Max, D)).
