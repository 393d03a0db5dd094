package dev.carerecord.e2e;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.model.entity.StorageSettings;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import jakarta.persistence.EntityManagerFactory;
import java.util.Properties;
import javax.sql.DataSource;
import org.apache.commons.dbcp2.BasicDataSource;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/**
 * HAPI FHIR's JPA engine (R4) over H2, wired the way the hapiproject/hapi image's
 * starter wires it, minus everything a test record store does not need
 * (full-text search, subscriptions delivery, MDM, CORS, UI).
 */
@Configuration
@Import({
  JpaR4Config.class,
  HapiJpaConfig.class,
  JpaBatch2Config.class,
  Batch2JobsConfig.class,
  ThreadPoolFactoryConfig.class,
  // Without it startup fails: no bean IBrokerClient.
  SubscriptionChannelConfig.class
})
public class StoreConfig {

  /** JDBC URL; set by RecordStore from -Dstore.db (a file path) or in-memory. */
  static String jdbcUrl = "jdbc:h2:mem:records;DB_CLOSE_DELAY=-1";

  /** hibernate.hbm2ddl.auto; set by RecordStore from -Dstore.ddl. */
  static String ddl = "update";

  @Bean(destroyMethod = "close")
  public BasicDataSource dataSource() {
    BasicDataSource ds = new BasicDataSource();
    ds.setDriverClassName("org.h2.Driver");
    ds.setUrl(jdbcUrl);
    ds.setUsername("sa");
    ds.setPassword("");
    ds.setMaxTotal(20);
    return ds;
  }

  @Bean
  public JpaStorageSettings storageSettings() {
    JpaStorageSettings s = new JpaStorageSettings();
    // Tests search, write and search again: never answer from a cached search.
    s.setReuseCachedSearchResultsForMillis(null);
    s.setAllowMultipleDelete(true);
    s.setExpungeEnabled(true);
    s.setDeleteExpungeEnabled(true);
    s.setAdvancedHSearchIndexing(false);
    s.setIndexMissingFields(StorageSettings.IndexEnabledEnum.DISABLED);
    // Custom SearchParameters (e.g. Consent provision-type) take effect for new writes.
    s.setMarkResourcesForReindexingUponSearchParameterChange(true);
    return s;
  }

  @Bean
  public PartitionSettings partitionSettings() {
    return new PartitionSettings();
  }

  @Bean
  public SubscriptionSettings subscriptionSettings() {
    return new SubscriptionSettings();
  }

  @Primary
  @Bean
  public LocalContainerEntityManagerFactoryBean entityManagerFactory(
      ConfigurableListableBeanFactory beanFactory,
      FhirContext fhirContext,
      JpaStorageSettings storageSettings,
      DataSource dataSource) {
    LocalContainerEntityManagerFactoryBean emf =
        HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
    emf.setPersistenceUnitName("HAPI_PU");
    emf.setDataSource(dataSource);
    Properties p = new Properties();
    p.put("hibernate.dialect", HapiFhirH2Dialect.class.getName());
    p.put("hibernate.search.enabled", "false");
    // "update" creates the schema in a new database; "none" skips reading an
    // existing one's metadata on every start (RecordStore sets it).
    p.put("hibernate.hbm2ddl.auto", ddl);
    // Hibernate's temporary tables for multi-table mutations: HAPI needs none,
    // and H2 refuses one of them (a duplicate column) on every start.
    p.put("hibernate.query.mutation_strategy.global_temporary.create_tables", "false");
    p.put("hibernate.query.mutation_strategy.global_temporary.drop_tables", "false");
    p.put("hibernate.format_sql", "false");
    p.put("hibernate.show_sql", "false");
    p.put("hibernate.jdbc.batch_size", "20");
    p.put("hibernate.cache.use_query_cache", "false");
    p.put("hibernate.cache.use_second_level_cache", "false");
    p.put("hibernate.cache.use_structured_entries", "false");
    p.put("hibernate.cache.use_minimal_puts", "false");
    emf.setJpaProperties(p);
    return emf;
  }

  @Primary
  @Bean
  public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
    JpaTransactionManager tm = new JpaTransactionManager();
    tm.setEntityManagerFactory(entityManagerFactory);
    return tm;
  }
}
