import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.network.ConnectionMode;
import org.apache.kafka.common.security.JaasContext;
import org.apache.kafka.common.security.ssl.SslFactory;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/** Kafka's own validation of the job's Java client properties (read as java.util.Properties on stdin). */
public class CheckKafkaClientProperties {
    public static void main(String[] args) throws Exception {
        Properties given = new Properties();
        given.load(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        Set<String> unknown = new TreeSet<>();
        for (String key : given.stringPropertyNames()) {
            if (!ConsumerConfig.configNames().contains(key)) unknown.add(key);
        }
        if (!unknown.isEmpty()) throw new IllegalArgumentException("unknown consumer configs " + unknown);
        Properties props = new Properties();
        props.putAll(given);
        props.put("bootstrap.servers", "127.0.0.1:9");
        props.put("key.deserializer", ByteArrayDeserializer.class.getName());
        props.put("value.deserializer", ByteArrayDeserializer.class.getName());
        ConsumerConfig config = new ConsumerConfig(props);  // ConfigDef: types, valid protocol
        String protocol = config.getString("security.protocol");
        Map<String, Object> values = new HashMap<>(config.values());
        if (protocol.startsWith("SASL_")) {
            JaasContext context = JaasContext.loadClientContext(values);  // parses sasl.jaas.config
            var entry = context.configurationEntries().get(0);
            System.out.println("jaas " + entry.getLoginModuleName() + " options "
                    + new TreeSet<>(entry.getOptions().keySet()) + " username " + entry.getOptions().get("username"));
            if (args.length > 0 && !args[0].equals(entry.getOptions().get("password"))) {
                throw new IllegalArgumentException("the JAAS password is not the one given");
            }
        }
        if (protocol.endsWith("SSL")) {
            SslFactory factory = new SslFactory(ConnectionMode.CLIENT);
            factory.configure(values);  // loads the PEM trust store and key store, checks the key password
            factory.close();
            System.out.println("ssl ok");
        }
        System.out.println("ok " + protocol);
    }
}
