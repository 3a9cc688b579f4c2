%% W2 pingpong (BEAM peer of bench/w2_pingpong.cpp): the driver sends
%% {ping, self()} and waits for pong, M times; the ponger answers each ping
%% and exits after the M-th.
%%
%%   erl -noshell -s w2 main [M=1000000]
-module(w2).
-export([main/0, main/1]).

main() -> main([]).
main(Args) ->
    M = bench_util:arg(Args, 1, 1000000),
    spawn(fun() -> driver(M) end).

driver(M) ->
    bench_util:watchdog("W2"),
    Me = self(),
    Ponger = spawn(fun() -> pong_loop(M, 0, Me) end),
    T0 = bench_util:now_ns(),
    ping_loop(M, Ponger, Me),
    T1 = bench_util:now_ns(),
    Answered = receive {answered, A} -> A end,
    Answered =:= M orelse bench_util:fail("W2: ~w pings answered, expected ~w", [Answered, M]),
    io:format("RESULT W2 ns_per_roundtrip=~.1f runtime=beam~n", [(T1 - T0) / M]),
    bench_util:finish().

ping_loop(0, _Ponger, _Me) -> ok;
ping_loop(I, Ponger, Me) ->
    Ponger ! {ping, Me},
    receive pong -> ok end,
    ping_loop(I - 1, Ponger, Me).

pong_loop(M, M, Driver) -> Driver ! {answered, M};
pong_loop(M, Answered, Driver) ->
    receive
        {ping, From} -> From ! pong
    end,
    pong_loop(M, Answered + 1, Driver).
