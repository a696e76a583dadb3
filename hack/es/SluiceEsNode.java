// Starts one real Elasticsearch node in this JVM, for hack/elasticsearch.sh.
//
// It does what the distribution's bootstrap (org.elasticsearch.bootstrap.Elasticsearch) does,
// minus what only a production install needs (security manager, bootstrap checks, native
// controller, the CLI's stdin handshake): read $ES_HOME/config/elasticsearch.yml, set up
// logging from config/log4j2.properties, load the modules under $ES_HOME/modules, start the
// node and keep it up until the JVM is told to stop (SIGTERM closes the node cleanly).
//
// Usage: java -cp <classes>:<server classpath> SluiceEsNode <ES_HOME>
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.PluginsLoader;

public final class SluiceEsNode {
    public static void main(String[] args) {
        if (args.length != 1) {
            System.err.println("usage: SluiceEsNode <ES_HOME>");
            System.exit(2);
        }
        try {
            run(Paths.get(args[0]).toAbsolutePath());
        } catch (Throwable t) {
            System.err.println("SluiceEsNode: failed to start Elasticsearch");
            t.printStackTrace();
            System.exit(1);
        }
    }

    private static void run(Path home) throws Exception {
        LogConfigurator.registerErrorListener();
        Settings initial = Settings.builder().put(Environment.PATH_HOME_SETTING.getKey(), home.toString()).build();
        Environment env = InternalSettingsPreparer.prepareEnvironment(initial, Map.of(), home.resolve("config"), () -> "sluice-es");
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(env.settings()));
        LogConfigurator.configure(env, true);

        PluginsLoader plugins = PluginsLoader.createPluginsLoader(
            PluginsLoader.loadModulesBundles(env.modulesDir()),
            PluginsLoader.loadPluginsBundles(env.pluginsDir()),
            Map.of(),
            false // the server is on the classpath, not a named module: no qualified exports to add
        );
        Node node = new Node(env, plugins);

        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.prepareForClose();
                node.close();
                node.awaitClose(30, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }, "sluice-es-shutdown"));

        node.start();
        System.out.println("SluiceEsNode: started " + Node.NODE_NAME_SETTING.get(env.settings()));
        closed.await(); // the node's threads are daemons in part; keep the JVM alive until shutdown
    }
}
