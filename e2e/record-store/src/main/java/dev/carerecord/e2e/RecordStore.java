package dev.carerecord.e2e;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.interceptor.api.IInterceptorService;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;

/**
 * A FHIR R4 record store for local e2e runs: HAPI FHIR's JPA engine served by
 * embedded Jetty at http://HOST:PORT/fhir.
 *
 * <p>System properties: store.port (18080; 0 picks a free port, logged), store.host (127.0.0.1), store.db (an H2
 * file path without suffix; in-memory when unset), store.ddl (hibernate.hbm2ddl.auto:
 * update, the default, or none for a database this build already created).
 */
public final class RecordStore {
  private static final Logger log = LoggerFactory.getLogger(RecordStore.class);

  private RecordStore() {}

  public static void main(String[] args) throws Exception {
    long t0 = System.nanoTime();
    int port = Integer.getInteger("store.port", 18080);
    String host = System.getProperty("store.host", "127.0.0.1");
    String db = System.getProperty("store.db", "");
    if (!db.isEmpty()) {
      StoreConfig.jdbcUrl = "jdbc:h2:file:" + db + ";DB_CLOSE_ON_EXIT=FALSE;TRACE_LEVEL_FILE=0";
    }
    StoreConfig.ddl = System.getProperty("store.ddl", "update");

    AnnotationConfigApplicationContext spring = new AnnotationConfigApplicationContext();
    spring.register(StoreConfig.class);
    spring.refresh();

    FhirContext fhir = spring.getBean(FhirContext.class);
    JpaStorageSettings settings = spring.getBean(JpaStorageSettings.class);
    RestfulServer rest = new RestfulServer(fhir, spring.getBean(IInterceptorService.class));
    rest.registerProviders(spring.getBean(ResourceProviderFactory.class).createProviders());
    rest.registerProvider(spring.getBean(JpaSystemProvider.class));
    DatabaseBackedPagingProvider paging = spring.getBean(DatabaseBackedPagingProvider.class);
    paging.setDefaultPageSize(20);
    paging.setMaximumPageSize(200);
    rest.setPagingProvider(paging);
    rest.setDefaultResponseEncoding(EncodingEnum.JSON);
    @SuppressWarnings("unchecked")
    IFhirSystemDao<?, ?> systemDao = spring.getBean(IFhirSystemDao.class);
    JpaCapabilityStatementProvider capabilities =
        new JpaCapabilityStatementProvider(
            rest,
            systemDao,
            settings,
            spring.getBean(ISearchParamRegistry.class),
            spring.getBean(IValidationSupport.class));
    capabilities.setImplementationDescription("ics-operator e2e record store (HAPI FHIR JPA, H2)");
    rest.setServerConformanceProvider(capabilities);

    Server jetty = new Server();
    ServerConnector http = new ServerConnector(jetty);
    http.setHost(host);
    http.setPort(port);
    jetty.addConnector(http);
    ServletContextHandler handler = new ServletContextHandler();
    handler.setContextPath("/");
    ServletHolder holder = new ServletHolder("fhir", rest);
    holder.setInitOrder(1);
    handler.addServlet(holder, "/fhir/*");
    jetty.setHandler(handler);
    jetty.setStopAtShutdown(false);
    jetty.setStopTimeout(5_000);

    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  log.info("stopping");
                  try {
                    jetty.stop();
                  } catch (Exception e) {
                    log.warn("jetty stop", e);
                  }
                  spring.close();
                  log.info("stopped");
                },
                "record-store-shutdown"));

    jetty.start();
    log.info(
        "record store ready at http://{}:{}/fhir in {} ms",
        host,
        http.getLocalPort(),
        (System.nanoTime() - t0) / 1_000_000);
    jetty.join();
  }
}
