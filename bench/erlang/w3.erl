%% W3 ring (BEAM peer of bench/w3_ring.cpp): 503 processes in a ring pass a
%% token for H hops. A member that receives T > 0 passes T-1 on (one hop);
%% the one that receives 0 reports its index and sends -1 around the ring,
%% which stops every member.
%%
%%   erl -noshell -s w3 main [H=10000000]
-module(w3).
-export([main/0, main/1]).

-define(RING, 503).

main() -> main([]).
main(Args) ->
    H = bench_util:arg(Args, 1, 10000000),
    spawn(fun() -> driver(H) end).

driver(H) ->
    bench_util:watchdog("W3"),
    Me = self(),
    Hops = atomics:new(1, []),
    Base = erlang:system_info(process_count),
    Ring = [spawn(fun() -> member(I, Me, Hops) end) || I <- lists:seq(0, ?RING - 1)],
    Nexts = tl(Ring) ++ [hd(Ring)],
    [P ! {next, Next} || {P, Next} <- lists:zip(Ring, Nexts)],
    T0 = bench_util:now_ns(),
    hd(Ring) ! H,
    Last = receive {done, I} -> I end,
    T1 = bench_util:now_ns(),
    bench_util:wait_process_count(Base),
    Made = atomics:get(Hops, 1),
    Expected = H rem ?RING,
    {Last, Made} =:= {Expected, H} orelse
        bench_util:fail("W3: token ended at member ~w after ~w hops, expected member ~w after ~w",
                        [Last, Made, Expected, H]),
    io:format("RESULT W3 ns_per_hop=~.1f runtime=beam~n", [(T1 - T0) / H]),
    bench_util:finish().

member(I, Driver, Hops) ->
    receive {next, Next} -> loop(I, Driver, Next, Hops, 0) end.

loop(I, Driver, Next, Hops, Made) ->
    receive
        T when is_integer(T), T > 0 ->
            Next ! T - 1,
            loop(I, Driver, Next, Hops, Made + 1);
        0 ->
            Driver ! {done, I},
            Next ! -1,
            atomics:add(Hops, 1, Made);
        -1 ->
            Next ! -1,
            atomics:add(Hops, 1, Made)
    end.
