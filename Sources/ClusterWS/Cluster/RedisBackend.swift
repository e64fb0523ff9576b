import Logging
import NIOPosix

/// The Redis a node talks to: one server, or a Redis Cluster. Each case keeps
/// its concrete types, so nothing needs a downcast to reach them.
package enum RedisBackend: Sendable {
    /// One server: a command connection per event loop and a subscriber connection.
    case single(LoopConnections, RedisSubscriber)
    /// A Redis Cluster: a slot-routing client and sharded pub/sub.
    case cluster(RedisClusterClient, ClusterPubSub)

    /// Commands, whichever the topology.
    var commands: any RedisCommands {
        switch self {
        case .single(let connection, _): connection
        case .cluster(let client, _): client
        }
    }

    /// Pub/sub, whichever the topology.
    var pubSub: any RedisPubSub {
        switch self {
        case .single(_, let subscriber): subscriber
        case .cluster(_, let subscriber): subscriber
        }
    }

    /// The backend and the delivery driver for a node: the one place that
    /// knows which driver runs on which topology.
    /// `resubscribed` runs each time the subscriber of one Redis server is
    /// connected and subscribed again (what was published meanwhile is lost to it).
    static func make(configuration: ClusterConfiguration, redis: RedisConfiguration, context: DriverContext,
                     metrics: ClusterMetrics, logger: Logger, resubscribed: LateCallback? = nil) -> (RedisBackend, any DeliveryDriver) {
        let loops = MultiThreadedEventLoopGroup.singleton
        let buffer = configuration.limits.subscriberBuffer
        let counters = context.counters
        let onOverflow: @Sendable (Int) -> Void = { counters.drop(.subscriberOverflow, count: $0) }
        // Scripts are loaded on every (re)connect (on a Redis Cluster: on every node's),
        // so calls by SHA find them even right after a Redis restart, and posts keep
        // their order (a NOSCRIPT retry would put a post behind later ones).
        let scripts = [Registration.reserveScript, MultiUserScript.script]
            + (configuration.driver == .queue ? [QueueScript.script] : [])
            + (configuration.history.isEnabled ? HistoryScript.all : [])
            + (configuration.presence.rooms ? PresenceScripts.all : [])
        let setup = scripts.map { RedisCommand("SCRIPT", "LOAD", .string($0.source)) }
        if redis.isCluster {
            let cluster = RedisClusterClient(configuration: redis, logger: logger, setupCommands: setup)
            let allChannel = context.keys.allChannel
            let pubSub = ClusterPubSub(RedisShardedSubscriber(cluster: cluster, buffer: buffer, onOverflow: onOverflow,
                                                              standby: configuration.failover.standbySubscriptions,
                                                              logger: logger),
                                       isClassic: { $0 == allChannel })
            let driver: any DeliveryDriver = switch configuration.driver {
            case .pubSub: PubSubDriver(redis: cluster, sharded: true, context: context)
            case .queue:
                ClusterQueueDriver(cluster: cluster, context: context, consumers: QueueConsumers(
                    context: context, configuration: redis, makeConnection: { RedisClusterClient(configuration: $0, logger: logger) }))
            }
            return (.cluster(cluster, pubSub), driver)
        }
        let connection = LoopConnections(configuration: redis, loops: loops, logger: logger,
                                         commandDuration: metrics.redisCommand, reconnects: metrics.redisReconnects,
                                         setupCommands: setup)
        var subscriberRedis = redis
        if let resubscribed { subscriberRedis.hooks.linkChanged = { up in if up { resubscribed() } } }
        let subscriber = RedisSubscriber(configuration: subscriberRedis, eventLoop: loops.next(), buffer: buffer, onOverflow: onOverflow,
                                         logger: logger, reconnects: metrics.redisReconnects)
        let driver: any DeliveryDriver = switch configuration.driver {
        case .pubSub: PubSubDriver(redis: connection, sharded: false, context: context)
        case .queue:
            QueueDriver(redis: connection, context: context, consumers: QueueConsumers(
                context: context, configuration: redis,
                makeConnection: { RedisConnection(configuration: $0, eventLoop: loops.next(), logger: logger) }))
        }
        return (.single(connection, subscriber), driver)
    }
}
